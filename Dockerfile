# The image the Helm chart runs (helm/rotator, image.repository "rotator").
#   docker build -t <registry>/rotator:0.1.0 .
# Slim Python base, rotator installed into a venv, running as an unprivileged user.
# One image for every mode: `rotator run` (the default command), `rotator rotate` (the
# CronJob) and the verification sidecar, `rotator authz --config /etc/rotator/rotator.toml`.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotator ./rotator
RUN python -m venv /opt/rotator \
 && /opt/rotator/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/rotator/bin/pip install --no-cache-dir '.[redis,authz]'

FROM python:3.11-slim
COPY --from=build /opt/rotator /opt/rotator
# A fixed non-root UID/GID, matching the chart's runAsUser/runAsGroup (10001).
RUN groupadd --system --gid 10001 rotator \
 && useradd --system --uid 10001 --gid rotator --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rotator
ENV PATH=/opt/rotator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# The root file system can be read-only: nothing is written outside /tmp.
ENTRYPOINT ["rotator"]
CMD ["run", "--config", "/etc/rotator/rotator.toml"]
