"""The kernel's own hook plugins: always enabled, first in plugin order.

They implement, as plugins like any other, the behaviour the specification
requires of every site: the default parser, the attached data every inbound
interaction carries, and threading.
"""
