"""The HTTP edge: Litestar controllers, authentication, wire types, error mapping."""
