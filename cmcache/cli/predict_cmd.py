"""``predict``: the models likely to be needed next, learned from the use log."""

from __future__ import annotations

from typing import Annotated

import typer

from cmcache.cli.app import app, state


@app.command()
def predict(
    limit: Annotated[
        int, typer.Option("--limit", min=1, metavar="N", help="How many models to show.")
    ] = 10,
) -> None:
    """Rank the models likely to be needed next, each with its reason."""
    from cmcache.cli.fast import PREDICT_EMPTY, predict_data, predict_lines
    from cmcache.services.cache.predict import predict_models

    st = state()
    predictions = predict_models(st.settings(), limit)
    st.out.table(["ref", "score", "reason"], predict_lines(predictions))
    if not predictions:
        st.out.info(PREDICT_EMPTY)
    st.out.finish(predict_data(predictions))
