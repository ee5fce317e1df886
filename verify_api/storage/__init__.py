"""The public service's database: public data only (leaves, trees, a mirror of chain facts, scans).

It has its own tables, migrations (``verify_api/migrations``) and URL (``CARDPROOF_PUBLIC_DATABASE_URL``); it
never holds a code, an opening, a batch secret or a key that opens one.
"""
