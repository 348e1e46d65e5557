# The monitoring image: the Evidently job `python -m covidct_monitor` (monitoring/), exact pins of
# monitoring/requirements.txt. Build context: the repository root.
#   docker build -f docker/monitor.Dockerfile -t covidct-monitor:dev .
# Runs as uid 10001, the owner of covidct's prediction log, so that it can open the SQLite log
# (WAL) on the volume it shares with the API.
FROM python:3.11-slim-bookworm
COPY monitoring/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt
COPY monitoring /opt/covidct-monitor
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps /opt/covidct-monitor \
    && python -m covidct_monitor --version \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/covidct-monitor --create-home \
        --shell /usr/sbin/nologin covidct \
    && install -d -o covidct -g covidct /reports /reference
ENV PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="covidct-monitor" \
      org.opencontainers.image.description="Evidently monitoring job of covidct" \
      org.opencontainers.image.revision="$VCS_REF"
USER covidct
WORKDIR /var/lib/covidct-monitor
ENTRYPOINT ["python", "-m", "covidct_monitor"]
CMD ["--help"]
