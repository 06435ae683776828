# syntax=docker/dockerfile:1
# One image for every Betabase RLHF service; docker-compose.yml picks the
# service with `command:` (default: the feedback service).
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
RUN pip install --no-cache-dir ".${EXTRAS}" \
    && rm -rf /app/build /app/*.egg-info

USER rlhf

CMD ["python", "-m", "services.feedback.main"]
