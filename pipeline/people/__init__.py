"""The people of the editors' console: users and their roles, sign-in sessions, and the
audit log of what they changed.

    roles.py     what each role may do (``can``), and why not, in a sentence
    users.py     accounts: argon2id passwords, optional TOTP, roles, disabling
    sessions.py  sign-in sessions: random tokens stored as SHA-256, idle and absolute expiry
    audit.py     who did what, when: the console, and the command line (user None)

The web console (``pipeline/web/console``) and ``letterpress users`` call these
functions; neither writes SQL of its own.
"""
