"""The one config tree (schema), how it is loaded from YAML and overrides (loading), the paths a run
may touch (paths), what a pretrained model's config.json allows (pretrained), and the README's
generated reference (reference). Cheap to import: loading a config never imports torch."""
