"""Multi-view pose fusion."""
