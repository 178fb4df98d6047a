"""The bodies of the CLI's commands; `cli.py` parses, these act (DESIGN §3).

`database` (migrate, backup, restore), `keys` and `keys_rotate` (`bindify keys …`), `admin`
(`bindify admin …`). Each refuses with one `BindifyError` line; a refusal changes nothing.
"""
