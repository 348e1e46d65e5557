# The gateway of the stack: HAProxy (Debian 12's package) balancing over the healthy API
# replicas, found through Swarm's DNS. Build context: the repository root.
#   docker build -f docker/gateway.Dockerfile -t covidct-gateway:dev .
# Swarm's own load balancer (VIP and ingress routing mesh) needs the kernel's IPVS; the gateway
# works on any kernel and adds readiness-aware routing and retries (docs/OPERATIONS.md).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
COPY docker/haproxy.cfg /etc/haproxy/haproxy.cfg
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="covidct-gateway" \
      org.opencontainers.image.revision="$VCS_REF"
# tasks.<service> of the API in the stack's network.
ENV API_SERVICE=tasks.api
USER haproxy
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /gateway/healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 2 s <&3 && [[ $s == *' 200 '* ]]"]
CMD ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
