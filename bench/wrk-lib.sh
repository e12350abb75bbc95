# Shared by the bench scripts (sourced): wrk runs recorded per contender, and their medians.
# Needs WORK, THREADS, CONNECTIONS, DURATION and KEY (sent as the bearer); SCRIPT, when
# set, is a wrk Lua script for the request (a method, a body, headers).

# us VALUE: a wrk latency (12.3us, 1.2ms, 1.1s) in microseconds.
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }
# ticks PID...: "user system", the CPU clock ticks the processes have used so far.
ticks() {
  for p in "$@"; do awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo 0 0; done \
    | awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
# load NAME URL [PID...]: one wrk run; appends "rps p50_us p99_us non2xx cpu_us user_us
# sys_us" to $WORK/r-NAME: the CPU time the PIDs (the proxy's processes) used per
# request, in all, in user space and in the kernel, sampled from 1 s into the run to 1 s
# before its end (DURATION in whole seconds, at least 3); "-" without PIDs.
load() {
  local name=$1 url=$2 out="$WORK/$1.wrk"; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $KEY" \
    ${SCRIPT:+-s "$SCRIPT"} "$url" >"$out" &
  local run=$! secs=${DURATION%s} u0=0 s0=0 u1=0 s1=0 cpu="- - -"
  if [ $# -gt 0 ] && [ "$secs" -ge 3 ] 2>/dev/null; then
    sleep 1; read -r u0 s0 < <(ticks "$@"); sleep $((secs - 2)); read -r u1 s1 < <(ticks "$@")
  fi
  wait "$run"
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  [ $((u1 + s1)) -gt 0 ] && cpu=$(awk -v u=$((u1 - u0)) -v k=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" -v r="$rps" \
    -v s=$((secs - 2)) 'BEGIN { f = 1e6 / hz / (r * s); printf "%.1f %.1f %.1f", (u + k) * f, u * f, k * f }')
  echo "$rps $(us "$(awk '$1=="50%" {print $2}' "$out")") \
$(us "$(awk '$1=="99%" {print $2}' "$out")") $(awk '/Non-2xx/ {print $5}' "$out" | grep . || echo 0) $cpu" >>"$WORK/r-$name"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }  # of numbers, or "-"
# col NAME N: the median of column N over NAME's runs.
col() { awk -v c="$2" '{ print $c }' "$WORK/r-$1" | median; }
