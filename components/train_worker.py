"""One of the processes `accelerate launch` starts (accelerate_launch.py): it reads the train stage's request back
whole, trains through `build.train_adapter`, and on rank 0 writes the metrics."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from components.build import train_adapter
from components.requests import TrainRequest


def main(request: str, into: str, metrics: str) -> None:
    trained = train_adapter(TrainRequest.model_validate_json(Path(request).read_text()), Path(into))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(metrics).write_text(json.dumps(trained))


if __name__ == "__main__":
    main(*sys.argv[1:])
