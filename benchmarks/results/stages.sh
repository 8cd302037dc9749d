# Shared by the board pipelines (sourced): a timestamped log line, and the test protocol run once per checkpoint.
# The sourcing script sets E (the env id) and runs from the repository root.
log() { echo "$(date -u +%FT%TZ) $*"; }

evaluate() {  # AGENT CHECKPOINT: metabench evaluate into CHECKPOINT's folder/evaluation, unless it is there already
    local out
    out="$(dirname "$2")/evaluation"
    if [ ! -f "$out/summary.json" ]; then
        log "evaluate $1 $2"
        metabench evaluate --agent "$1" --checkpoint "$2" --env "$E" --out "$out"
    fi
}
