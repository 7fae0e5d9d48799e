# syntax=docker/dockerfile:1
# Podium's one image: the Temporal worker by default; docker-compose.yml runs the HTTP API from
# the same image with `uvicorn starter.api:app`.
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PODIUM_DATASETS_DIR=/app/datasets \
    PODIUM_TEMPLATES_DIR=/app/templates \
    PODIUM_POLICY_FILE=/app/policies/refund.yaml \
    PODIUM_MODELS_FILE=/app/config/models.yaml

# OCR (opencv, bundled with rapidocr) links against libGL and GLib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 podium \
    && useradd --system --uid 10001 --gid podium --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin podium

WORKDIR /app

# The installable project (pyproject.toml names README.md as its readme).
COPY pyproject.toml README.md worker.py ./
COPY core/ core/
COPY activities/ activities/
COPY workflows/ workflows/
COPY starter/ starter/
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

# Data the worker reads at run time.
COPY datasets/ datasets/
COPY templates/ templates/
COPY config/ config/
COPY policies/ policies/
COPY knowledge/ knowledge/

# PODIUM_DATA_DIR defaults to ./var; the only path the process writes to.
RUN mkdir var && chown podium:podium var

USER podium

# SIGINT makes asyncio.run cancel the main task, and a cancelled Worker.run() shuts down
# gracefully; uvicorn treats SIGINT like SIGTERM.
STOPSIGNAL SIGINT
EXPOSE 8000
CMD ["python", "worker.py"]
