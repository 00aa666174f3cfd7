"""Authentication, roles, tenants and quotas of the service (README: Security).

- `keys.py`: API keys, stored as SHA-256 hashes of 256-bit secrets in `data_dir/auth/keys.sqlite3`;
- `roles.py`: the role each RPC needs (reader < writer < admin);
- `tenants.py`: one engine per tenant, each over its own data directory;
- `quotas.py`: per-tenant request rate and caps on items, events and users;
- `context.py`: the caller's tenant and engine for the current call (context variables the
  interceptor sets, read by the servicers and the metrics).
"""
