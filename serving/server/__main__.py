"""`python -m serving.server`: serve one model until SIGINT, SIGTERM or SIGHUP.

python -m serving.server --base-path models --model-name deepfm --port 8500
python -m serving.server --model-config-file models/models.config   # policy and labels from the file
python -m serving.server --port=8500 --rest_api_port=8501 --model_config_file=models/models.config \
    --model_config_file_poll_wait_seconds=30 --monitoring_config_file=serving/monitoring.config   # TF Serving's flags

The handlers only record a signal (a `list.append`, which takes no lock) and the main thread polls for one, so
no burst of signals at any moment can re-enter a handler and wedge the process: a handler that called
`threading.Event.set` (which holds a non-reentrant lock) hung when a second signal landed inside it. A signal that
arrives while the server starts stops it as soon as it serves; one that arrives while it stops changes nothing.
"""

from __future__ import annotations

import logging
import signal
import time

from serving.server.config import parse_command_line
from serving.server.lifecycle import ModelServer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_S = 0.1  # how often the main thread looks for a recorded signal
logger = logging.getLogger("serving.server")


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, set up logging, serve until a stop signal, then stop gracefully."""
    received: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, _frame: received.append(signum))
    command = parse_command_line(argv)
    logging.basicConfig(level=command.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ModelServer(command.config, command.credentials)
    server.start()
    while not received:
        time.sleep(POLL_S)
    logger.info("%s received: stopping", signal.Signals(received[0]).name)
    server.stop()


if __name__ == "__main__":
    main()
