"""The names of what every served model answers (the serving schema's keys): a leaf
module, so the export formats that check a written file against them and the serving
code that builds them (``deeplab_ext.run.serving``) share them without importing each
other. Any other network output is served under its own name as float32."""

SEMANTIC_PROBABILITIES = "semantic_probabilities"  # float32 [B, H, W, C], softmax
SEMANTIC_PREDICTIONS = "semantic_predictions"  # int32 [B, H, W], argmax
TAG_PROBABILITIES = "tag_probabilities"  # float32 [B, T], sigmoid
