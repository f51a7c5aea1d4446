"""Read receipts shaped like real clients' (small, written for these tests).

The shapes follow what the clients write (part order, content types, field
names and case, folding, vendor fields); the addresses and ids are made up.
"""

from __future__ import annotations

#: Thunderbird: text/plain, message/disposition-notification, text/rfc822-headers
THUNDERBIRD = b"""\
Message-ID: <c0ffee01-tb@customer.example>
Date: Mon, 3 Mar 2025 10:15:02 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
From: Bob Customer <bob@customer.example>
To: support@centre.example
Subject: Return Receipt (displayed) - Your ticket 4711
References: <out-4711@centre.example>
Content-Type: multipart/report; report-type=disposition-notification;
 boundary="------------mdn123"

This is a multi-part message in MIME format.
--------------mdn123
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit

This is a Return Receipt for the mail that you sent to <bob@customer.example>.

Note: This Return Receipt only acknowledges that the message was displayed on
the recipient's computer. There is no guarantee that the recipient has read or
understood the message contents.

--------------mdn123
Content-Type: message/disposition-notification; name="MDNPart2.txt"
Content-Disposition: inline
Content-Transfer-Encoding: 7bit

Reporting-UA: laptop.customer.example; Mozilla Thunderbird
Final-Recipient: rfc822;bob@customer.example
Original-Message-ID: <out-4711@centre.example>
Disposition: manual-action/MDN-sent-manually; displayed

--------------mdn123
Content-Type: text/rfc822-headers; name="MDNPart3.txt"
Content-Transfer-Encoding: 7bit
Content-Disposition: inline

Return-Path: <support@centre.example>
Message-ID: <out-4711@centre.example>
Date: Mon, 3 Mar 2025 09:00:00 +0000
From: support@centre.example
To: bob@customer.example
Subject: Your ticket 4711

--------------mdn123--
"""

#: Outlook through Exchange: base64 human part, "Read:" subject, automatic
#: action, Exchange's vendor fields, no returned message
OUTLOOK = b"""\
From: Carol Client <carol@client.example>
To: <support@centre.example>
Subject: Read: Your order 815
Thread-Topic: Your order 815
Date: Tue, 4 Mar 2025 08:01:10 +0000
Message-ID: <f00dbabe01@EXCH01.client.example>
Content-Language: en-US
X-MS-Has-Attach:
MIME-Version: 1.0
Content-Type: multipart/report;
\treport-type=disposition-notification;
\tboundary="_000_f00dbabe01EXCH01_"

--_000_f00dbabe01EXCH01_
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64

WW91ciBtZXNzYWdlDQoNCiAgVG86IENhcm9sIENsaWVudA0KICBTdWJqZWN0OiBZb3VyIG9yZGVy
IDgxNQ0KDQp3YXMgcmVhZCBvbiAwNC8wMy8yMDI1IDA4OjAxLg0K

--_000_f00dbabe01EXCH01_
Content-Type: message/disposition-notification

Reporting-UA: EXCH01.client.example; Microsoft Exchange Server 2016
Final-Recipient: rfc822;carol@client.example
Original-Message-ID: <out-815@centre.example>
Disposition: automatic-action/MDN-sent-automatically; displayed
X-MSExch-Correlation-Key: 3iU7Q1bSxkGZ8Z6L5J0P6w==
X-Display-Name: Carol Client

--_000_f00dbabe01EXCH01_--
"""

#: Outlook's "Not read:" receipt: the message was deleted unread
OUTLOOK_NOT_READ = OUTLOOK.replace(b"Subject: Read:", b"Subject: Not read:").replace(
    b"MDN-sent-automatically; displayed", b"MDN-sent-automatically; deleted"
)

#: The quirks the tolerance is for, together, in the style of small clients
#: and webmail: quoted upper-case report-type, the disposition part sent as
#: text/plain *after* a returned message, lower-case and folded field names
#: with comments, a missing sending-mode separator blank, an error modifier.
QUIRKY = b"""\
From: "Dan" <Dan@Mobile.example>
To: support@centre.example
Subject: Read receipt
Message-ID: <quirky-1@mobile.example>
MIME-Version: 1.0
Content-Type: Multipart/Report; Report-Type="Disposition-Notification"; boundary=XyZ

--XyZ
Content-Type: text/plain

Your message was displayed.
--XyZ
Content-Type: message/rfc822

Message-ID: <out-99@centre.example>
From: support@centre.example
Subject: Hello

hi
--XyZ
Content-Type: text/plain; charset=us-ascii

reporting-ua: phone.mobile.example;
   MobileMail 2.1 (iOS)
final-recipient: RFC822; <Dan@Mobile.example> (Dan on the phone)
original-message-id:
 <out-99@centre.example>
disposition: Manual-Action / MDN-Sent-Manually (user clicked) ;Displayed/Error
error: could not render
error: second problem
--XyZ--
"""

#: A delivery status notification: the DSN plugin's, never an MDN
DSN = b"""\
From: MAILER-DAEMON@mx.example
To: support@centre.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=B

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

Final-Recipient: rfc822; nobody@customer.example
Action: failed
Status: 5.1.1
--B
Content-Type: message/disposition-notification

Disposition: manual-action/MDN-sent-manually; displayed
--B--
"""

#: An abuse report (ARF): another report type, not an MDN
ARF = DSN.replace(b"report-type=delivery-status", b"report-type=feedback-report")

#: A customer forwarding a receipt they got: the MDN is inside the returned
#: message, the e-mail itself is ordinary
FORWARDED = (
    b"""\
From: eve@customer.example
To: support@centre.example
Subject: Fwd: Read receipt
Message-ID: <fwd-1@customer.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=OUTER

--OUTER
Content-Type: text/plain

See the receipt below.
--OUTER
Content-Type: message/rfc822

"""
    + THUNDERBIRD
    + b"""
--OUTER--
"""
)

#: No report-type parameter, but a disposition part: a client's mistake
NO_REPORT_TYPE = THUNDERBIRD.replace(b"report-type=disposition-notification;", b"")

#: The wrong outer type (multipart/mixed) around a disposition part
MIXED = THUNDERBIRD.replace(
    b"multipart/report; report-type=disposition-notification;", b"multipart/mixed;"
)

#: report-type says MDN, but the disposition part is unreadable
EMPTY_MDN = b"""\
From: frank@customer.example
To: support@centre.example
Subject: Read
Message-ID: <empty-1@customer.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary=E

--E
Content-Type: text/plain

Your message was read.
--E--
"""

PLAIN = b"""\
From: grace@customer.example
To: support@centre.example
Subject: Disposition of my order
Message-ID: <plain-1@customer.example>

Disposition: manual-action/MDN-sent-manually; displayed
"""
