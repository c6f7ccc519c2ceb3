"""`python -m serving.server`: serve one model until SIGINT or SIGTERM.

python -m serving.server --base-path models --model-name deepfm --port 8500
python -m serving.server --model-config-file models/models.config   # policy and labels from the file
python -m serving.server --port=8500 --rest_api_port=8501 --model_config_file=models/models.config \
    --model_config_file_poll_wait_seconds=30 --monitoring_config_file=serving/monitoring.config   # TF Serving's flags
"""

from __future__ import annotations

import logging
import signal
import threading

from serving.server.config import parse_command_line
from serving.server.lifecycle import ModelServer


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, set up logging, serve until SIGINT or SIGTERM, then stop gracefully."""
    command = parse_command_line(argv)
    logging.basicConfig(level=command.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ModelServer(command.config, command.credentials)
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
