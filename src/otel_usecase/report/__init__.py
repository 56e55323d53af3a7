"""Reports over the ledger, shared by the ``otel-usecase`` CLI (and the dashboard)."""
