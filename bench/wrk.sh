# Shared by the service benchmarks (sourced): POSTs of "$WORK/scan.png" with wrk.
#   wrk_setup              writes "$WORK/post.lua" (the request: PNG body, API key bench-key)
#   wait_for URL           waits until URL answers
#   run_wrk NAME URL       one request, 5 s of warm-up, then $SECONDS_ s with $CONNECTIONS
#                          connections; the output is printed and kept in "$WORK/NAME.txt"

wrk_setup() {
    cat > "$WORK/post.lua" <<LUA
local f = io.open("$WORK/scan.png", "rb"); wrk.body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
wrk.headers["X-API-Key"] = "bench-key"
LUA
}

wait_for() { for _ in $(seq 1 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }

run_wrk() {  # name url
    curl -sf -X POST -H 'Content-Type: image/png' -H 'X-API-Key: bench-key' --data-binary @"$WORK/scan.png" "$2" >/dev/null
    wrk -t2 -c8 -d5s -s "$WORK/post.lua" "$2" >/dev/null   # warm-up
    echo "== $1"
    wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_}s" --latency -s "$WORK/post.lua" "$2" | tee "$WORK/$1.txt"
}
