"""One schema's predicted keypoints in another schema's terms: a fixed converter and a learned translator.

* ``results.py`` -- COCO results <-> arrays, the fixed converter :func:`~sagepose.translate.results.convert_results`
  (a :class:`~sagepose.keypoint_maps.KeypointMap`'s copies and midpoints; the scores act as the visibility: a
  midpoint's score is the smaller of its two; a joint the map does not give is ``0, 0, 0``) and each instance's
  normalised frame (:func:`~sagepose.translate.results.person_frames`).
* ``model.py`` -- :class:`~sagepose.translate.model.Translator`, a small MLP from the source keypoints
  (box-normalised, with their scores) to the target's (same frame) and a per-joint logit (is the joint labeled).
  Where the fixed map gives a joint the network predicts a residual on it (starting at zero: an untrained translator
  places joints as the fixed map does); elsewhere it predicts the joint itself.
  :func:`~sagepose.translate.model.translate_results` applies it to a results list.
* ``pairs.py`` -- the training pairs: images labeled in the target schema with a model's predictions in the source
  schema, paired by box IoU (:func:`sagepose.eval.pairing.pair_by_box_iou`).
* ``config.py`` -- :class:`~sagepose.translate.config.TranslatorConfig`, the architecture and training numbers.
* ``fit.py`` -- :func:`~sagepose.translate.fit.fit_translator`: the affine base in closed form, pair augmentation,
  and the training (a ``LightningModule`` on the CPU).
* ``files.py`` -- a translator's file: plain data, read back weights-only.

The normalised frame of an instance: its ``bbox`` when the result has one, else the box of its keypoints scored above
:data:`~sagepose.translate.results.FRAME_MIN_SCORE` (of all of them when none is): coordinates minus the box's
centre, divided by the box's longer side. Fitting and applying use the same frame, so a translator fitted on results
with boxes expects results with boxes.
"""
