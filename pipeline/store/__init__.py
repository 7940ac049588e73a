"""Where state lives: the SQL schema, engines and migrations, and the Redis keys."""
