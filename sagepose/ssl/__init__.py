"""Semi-supervised pose (SAGE-Pose): the pieces of one unlabeled step, pure torch, batched, on the device.

One unlabeled step, in the order the pieces run (the step itself is ``sagepose.train.ssl_module``):

1. ``views.py`` -- each unlabeled base crop gives one or two weak teacher views and M strong student views: a
   random affine ``A`` (base-crop input px -> view input px) drawn from the sample's key (its streams named there),
   ONE batched ``grid_sample``, then ``batch_aug``'s photometric distortion and coarse dropout; the affine algebra
   is :mod:`sagepose.geometry`'s torch helpers, in float32 whatever the autocast.
2. ``teacher.py`` -- ``EMATeacher``: a frozen deep copy of the student in eval mode, an EMA of its weights
   updated every optimizer step, run without a graph (bf16 autocast where asked) on the weak views.
3. ``warp.py`` -- ``warp_heatmaps``: the teacher's maps carried into a student view's heatmap frame by the
   relative affine (one ``grid_sample`` over B*K maps, left/right channels swapped where the student is
   mirrored); it agrees with warping the image.
4. ``losses.py`` -- maps as spatial distributions (``to_probabilities``), ``renormalize`` after the warp (the
   kept mass says which joints left the view), ``teacher_target`` (views averaged by confidence), the dynamic
   ``KeypointMask``, ``consistency_loss`` (JS / KL / MSE, normalised by the mask), ``soft_argmax``,
   ``temporal_loss`` for consecutive video frames, and ``rampup`` of the unlabeled weight.
5. ``priors.py`` -- ``StructuralPriors`` from the schema's skeleton and the labeled set: bone lengths, unsigned
   joint angles and Laplacian offsets must stay within their labeled ranges (any skeleton; none -> 0).

Every loss returns ``(loss, logs)``; the weights are applied by the step, in one place.
"""
