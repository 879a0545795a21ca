"""Gunicorn settings for the API: ``gunicorn -c python:api.gunicorn_conf "api:create_app()"``.

Gunicorn configures only its own loggers; this routes the service's loggers (``api.*``,
``models.*``) to stderr in the same key=value format as ``python -m api``, so model
switches and load failures are visible. Bind address and workers follow ``API_HOST``,
``API_PORT``, ``API_WORKERS`` and ``API_THREADS``; ``API_LOG_LEVEL`` sets the level.
"""

from __future__ import annotations

import os

_level = os.environ.get("API_LOG_LEVEL", "info").upper()

bind = f"{os.environ.get('API_HOST', '0.0.0.0')}:{os.environ.get('API_PORT', '5000')}"
workers = int(os.environ.get("API_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("API_THREADS", "4"))
# Workers load the model in create_app(); give them time on a cold start.
timeout = 60
# The gthread worker of gunicorn 26 waits out the whole graceful timeout on shutdown once
# a keep-alive client has connected; predictions take milliseconds, so 5 s is plenty.
graceful_timeout = 5

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "kv": {"format": "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "kv",
            "stream": "ext://sys.stderr",
        },
    },
    # A shallow merge with gunicorn's defaults: root must name a handler defined here.
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "api": {"level": _level, "handlers": ["stderr"], "propagate": False},
        "models": {"level": _level, "handlers": ["stderr"], "propagate": False},
        "gunicorn.error": {"level": _level, "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": _level, "handlers": ["stderr"], "propagate": False},
    },
}
