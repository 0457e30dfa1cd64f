"""Run the real ``aiposter`` CLI with the scripted container platform standing in for the outbox, for
tests where the process boundary is the point (SIGKILL mid-publish, replicas). The platform's state
directory comes from $SCRIPTED_PLATFORM_DIR; the rest of argv goes to the CLI unchanged."""

from __future__ import annotations

import os
import sys

from aiposter import cli
from aiposter.core import registry
from aiposter.publishers import scripted


def main() -> None:
    directory = os.environ["SCRIPTED_PLATFORM_DIR"]
    with registry.override(registry.DESTINATION, "outbox", scripted.factory(directory, platform="outbox")):
        sys.argv = ["aiposter", *sys.argv[1:]]
        cli.main()


if __name__ == "__main__":
    main()
