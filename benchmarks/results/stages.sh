# Shared by the board pipelines (sourced): a timestamped log line, the test protocol run once per checkpoint, and
# a submission verified at once (`metabench leaderboard verify`: every episode re-scored from the stored checkpoint).
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

submit_verified() {  # NAME EVALUATION CHECKPOINT [metabench submit options]: submit and verify, unless not evaluated or on the board
    local name=$1 evaluation=$2 checkpoint=$3
    shift 3
    if [ -f "$evaluation/summary.json" ] && [ ! -d "leaderboard/$E/$name" ]; then
        log "submit $name"
        metabench submit "$evaluation" --name "$name" --checkpoint "$checkpoint" "$@"
        log "verify $name"
        metabench leaderboard verify "$E/$name"
    fi
}
