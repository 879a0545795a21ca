#!/bin/sh
# One-shot job of the compose stack: make sure the shared registry holds a production
# scikit-learn model (creditcard) and a production TensorFlow model exported for TF Serving
# (creditcard_tf). Existing models are never retrained, so restarts are cheap and a model a
# user promoted stays in place.
#   env: MODELS_REGISTRY (default /app/models/registry), SERVING_DIR (/app/models/serving),
#        SOURCE_CSV (a Kaggle creditcard.csv; absent -> synthetic data), SYNTHETIC_ROWS,
#        TF_EPOCHS
set -eu

REGISTRY="${MODELS_REGISTRY:-/app/models/registry}"
SERVING_DIR="${SERVING_DIR:-/app/models/serving}"
SOURCE_CSV="${SOURCE_CSV:-/app/data-host/creditcard.csv}"
SYNTHETIC_ROWS="${SYNTHETIC_ROWS:-50000}"
TF_EPOCHS="${TF_EPOCHS:-5}"

log() { echo "model-bootstrap $*"; }

log "event=start registry=$REGISTRY serving_dir=$SERVING_DIR"
python -m models list || true   # reads MODELS_REGISTRY

if [ -f "$SOURCE_CSV" ]; then
    source_args="--csv $SOURCE_CSV"
    log "event=source csv=$SOURCE_CSV"
else
    source_args="--synthetic-rows $SYNTHETIC_ROWS"
    log "event=source synthetic_rows=$SYNTHETIC_ROWS reason=no_csv_at_$SOURCE_CSV"
fi

if [ -f data/train.csv ] && [ -f data/validation.csv ] && [ -f data/test.csv ]; then
    log "event=split status=present"
else
    # shellcheck disable=SC2086  # source_args is two words on purpose
    python -m models split $source_args
    log "event=split status=done"
fi

has_production() {
    # aliases.json maps alias -> version; the model is usable once "production" is set.
    [ -f "$REGISTRY/$1/aliases.json" ] && grep -q '"production"' "$REGISTRY/$1/aliases.json"
}

if has_production creditcard; then
    log "event=train model=creditcard status=present"
else
    python -m models train --name creditcard --promote production --registry "$REGISTRY"
    log "event=train model=creditcard status=done"
fi

if has_production creditcard_tf && [ -d "$SERVING_DIR/creditcard_tf" ]; then
    log "event=train model=creditcard_tf status=present"
else
    python -m models train-tf --name creditcard_tf --epochs "$TF_EPOCHS" \
        --serving-dir "$SERVING_DIR" --promote production --registry "$REGISTRY"
    log "event=train model=creditcard_tf status=done"
fi

python -m models list
log "event=done"
