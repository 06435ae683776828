# syntax=docker/dockerfile:1
# One image for every Betabase RLHF service; docker-compose.yml picks the
# service with `command:` (default: the feedback service).
# The Curate UI, built by npm into what becomes the gateway's package data (services/gateway/static).
FROM node:20-slim AS ui
WORKDIR /src
COPY frontend/package.json frontend/package-lock.json frontend/
RUN cd frontend && npm ci --no-audit --no-fund
COPY frontend frontend
RUN cd frontend && npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user the services run as.
RUN groupadd --system --gid 10001 rlhf \
    && useradd --system --uid 10001 --gid rlhf --home-dir /app --no-create-home rlhf

WORKDIR /app

# Copy the repository and install the project (and its `rlhf` console script).
# EXTRAS="[train]" builds the training image with torch, transformers, trl and peft for local LoRA runs.
ARG EXTRAS=""
COPY --chown=rlhf:rlhf . /app
COPY --from=ui --chown=rlhf:rlhf /src/services/gateway/static /app/services/gateway/static
RUN pip install --no-cache-dir ".${EXTRAS}" \
    && rm -rf /app/build /app/*.egg-info

USER rlhf

CMD ["python", "-m", "services.feedback.main"]
