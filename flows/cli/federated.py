"""``driftloop supernode``: the data owner's side of a federation (tasks.federated.supernode)."""

from __future__ import annotations

from typing import Optional

import typer

from flows.cli.common import exits

app = typer.Typer()


@app.command("supernode")
@exits()
def supernode(
    superlink: str = typer.Option(..., "--superlink", help="HOST:PORT of the federation's Fleet API."),
    data: str = typer.Option(
        ...,
        "--data",
        help="Your data: an .npz/.parquet/.csv file or an s3:// URI (read here, with this machine's credentials).",
    ),
    tls: Optional[str] = typer.Option(
        None, "--tls", help="The federation's CA certificate (PEM); omit for an insecure local test federation."
    ),
    auth_key: Optional[str] = typer.Option(
        None, "--auth-key", help="This node's ECDSA private key when the SuperLink authenticates SuperNodes."
    ),
    client_id: Optional[int] = typer.Option(
        None, "--client-id", help="A number naming this client in the round tables (default: its node id)."
    ),
    s3_endpoint: Optional[str] = typer.Option(
        None, "--s3-endpoint", help="S3-compatible endpoint for an s3:// --data."
    ),
    new_data: Optional[str] = typer.Option(
        None,
        "--new-data",
        help="Your newest data (a file, folder or "
        "s3:// URI): federated drift checks run the champion's detectors on it here.",
    ),
    print_only: bool = typer.Option(False, "--print", help="Print the flower-supernode command and exit."),
) -> None:
    """Start a Flower SuperNode serving your own data to a federation (it runs until stopped)."""
    import shlex

    from tasks.federated.supernode import exec_supernode, supernode_argv

    argv = supernode_argv(
        superlink, data, tls_ca=tls, auth_key=auth_key, client_id=client_id, s3_endpoint=s3_endpoint, new_data=new_data
    )
    if print_only:
        typer.echo(shlex.join(argv))
        return
    exec_supernode(argv)
