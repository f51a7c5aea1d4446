"""Contract fakes of services no test can reach (Microsoft Graph)."""
