"""``driftloop supernode``: join a federation with your own data, in one line on the data owner's machine.

The process becomes a ``flower-supernode`` (``exec``: its pid is the SuperNode's, so stopping it
stops the node) connecting to the federation's Fleet API and serving the data at ``--data`` (a local
npz/parquet/csv file, or an ``s3://`` URI read with this machine's own AWS credentials). The data
are read on this machine only, by the ClientApp, when the server asks; what leaves the machine is
the row count, the validation report (rule names, counts, feature names), model updates and metrics.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.errors import ConfigError
from tasks.federated.cluster import supernode_command
from tasks.federated.processes import child_env


def supernode_argv(
    superlink: str,
    data: str,
    *,
    tls_ca: str | None = None,
    auth_key: str | None = None,
    client_id: int | None = None,
    s3_endpoint: str | None = None,
    clientappio_address: str | None = None,
    new_data: str | None = None,
) -> list[str]:
    """The ``flower-supernode`` command line for these options; raises naming a missing file."""
    if ":" not in superlink:
        raise ConfigError(f"--superlink {superlink!r}: expected HOST:PORT of the federation's Fleet API")
    if not data.startswith("s3://"):
        p = Path(data.removeprefix("file://")).expanduser()
        if not (p.is_file() or p.is_dir()):
            raise ConfigError(
                f"--data {data!r}: no such file (an .npz, .parquet or .csv file, an image folder "
                "<label>/<image>, or an s3:// URI)"
            )
        data = str(p.resolve())
    if new_data is not None and not new_data.startswith("s3://"):
        new_data = str(Path(new_data.removeprefix("file://")).expanduser().resolve())
    for opt, f in (("--tls", tls_ca), ("--auth-key", auth_key)):
        if f is not None and not Path(f).is_file():
            raise ConfigError(f"{opt} {f!r}: no such file")
    return supernode_command(
        superlink,
        data,
        clientappio_address=clientappio_address,
        root_certificates=tls_ca,
        auth_private_key=auth_key,
        client_id=client_id,
        s3_endpoint=s3_endpoint,
        new_data_path=new_data,
    )


def exec_supernode(argv: list[str]) -> None:
    """Replace this process by the SuperNode (the environment: this project's code and venv first)."""
    os.execve(argv[0], argv, child_env())
