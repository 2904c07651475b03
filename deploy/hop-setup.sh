# Sourced by deploy/callgrind.sh and deploy/latency-shape.sh: one hop to
# measure, its files written under $WORK.
#
# In:  WORK, UP_PORT, GW_PORT; AUTH (none, rs256 or cached, default none);
#      MINT, a scopegate binary to mint the token with.
# Out: NGINX; $WORK/nginx/nginx.conf, the upstream (nginx, one worker, a
#      fixed 3-byte answer); $WORK/proxy/nginx.conf, nginx as a plain
#      proxy in the gateway's place (one process, keep-alive upstream
#      connections); $WORK/gateway.yaml, one route, /api/public, with
#      AUTH's rule; HEADER, the Authorization header to send, if any.
mkdir -p "$WORK"
for tool in oha nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "needs $tool" >&2; exit 2; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# One nginx process's config, $WORK/$1/nginx.conf: $2 goes at the top
# level, $3 inside `http`.
nginx_conf() {
  local dir="$WORK/$1"
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
$2
daemon off;
pid $PWD/$dir/nginx.pid;
error_log $PWD/$dir/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $PWD/$dir/tmp;
$3
}
CONF
}

# The upstream: a fixed 3-byte answer.
nginx_conf nginx "" "  server {
    listen 127.0.0.1:$UP_PORT;
    keepalive_requests 1000000;
    location / { return 200 \"ok\\n\"; }
  }"
# The plain-proxy baseline (BIN=nginx): nginx in the gateway's place, one
# process (no master), so that callgrind sees the worker.
nginx_conf proxy "master_process off;" "  upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$GW_PORT;
    keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
[ -f "$WORK/key.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
AUTH=${AUTH:-none}
HEADER=()
CACHE_SIZE=1000
case "$AUTH" in
  none)
    ROUTE='auth: none' ;;
  rs256|cached)
    # rs256, cache off: every request pays for a whole verification, as
    # with every token distinct (HAProxy's jwt_verify verifies every
    # request). cached: the peer benchmark's case, one token reused.
    TOKEN=$("$MINT" token --key "$WORK/key.pem" --iss https://callgrind.local/ --aud https://api.callgrind --sub cg --scope read:messages --ttl 1h)
    HEADER=(-H "Authorization: Bearer $TOKEN")
    ROUTE='scopes: [read:messages]'
    [ "$AUTH" = rs256 ] && CACHE_SIZE=0 ;;
  *) echo "AUTH is none, rs256 or cached" >&2; exit 2 ;;
esac
cat > "$WORK/gateway.yaml" <<YAML
listen: "127.0.0.1:$GW_PORT"
workers: 1
upstream:
  url: "http://127.0.0.1:$UP_PORT"
issuers:
  - issuer: https://callgrind.local/
    audiences: [https://api.callgrind]
    public_key_file: pub.pem
    algorithms: [RS256]
tokens:
  cache_size: $CACHE_SIZE
routes:
  - path: /api/public
    $ROUTE
YAML

