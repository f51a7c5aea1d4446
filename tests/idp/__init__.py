"""postroom's local identity provider for the OAuth 2.0 tests (README.md here)."""
