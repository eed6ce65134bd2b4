"""HDF5 artefacts of the pipeline: depth targets (``depth_maps`` stage) and pseudo-labels (``pseudo_labels``).

Source ground-truth depth (``depth.source: ground_truth``) gets no HDF5 file: the dataset's own depth files are
read where they lie, and ``depth_maps`` writes a small JSON record, ``depth/source.json``
(:func:`corda.paths.source_depth_record`, :func:`source_depth_h5`), in place of ``depth/source.h5``.

The original CorDA reads pre-computed depth PNG/MAT files and computes the depth-discrepancy weight ω
online only (method.md §2.1, §4). Our pipeline materialises both as one HDF5 file per domain/stage, so
that DVC can hash, cache and reuse them. This module owns the file layout, a streaming writer and the
readers.

Writing (:class:`H5StreamWriter`)
---------------------------------
* Items are written one at a time (row ``i`` of every dataset), so memory stays flat whatever the
  number of images: at most a couple of chunks per dataset live in HDF5's chunk cache.
* The file is written under a hidden temporary name (:func:`corda.io.temp_beside`) in the destination folder and
  ``os.replace``-d onto the destination only after exactly ``n`` items were written and the root
  attribute ``complete=True`` was set. On any exception the temporary file is removed, so a killed or
  failed stage never leaves a file that looks finished.
* Always a fresh file opened with ``"w"``: with ``cache.type hardlink`` a DVC output is a hard link
  into the cache, and opening it in place with ``"a"``/``"r+"`` would corrupt the cache
  (ecosystem.md §7).
* Deterministic bytes: no timestamps (``track_times=False``), attributes written in sorted order,
  and h5py writes byte-identical files for identical content (ecosystem.md §6), so a re-run with the
  same inputs gives the same DVC hash and does not invalidate downstream stages.
* HDF5/OS failures (disk full, permissions) become :class:`corda.errors.CordaError` naming the file.
* Data-parallel export: each rank writes its share to a part file and :func:`merge_pseudo_h5` streams
  the parts, in order, into the final file (the same content as a one-process export).

Layout shared by both kinds
---------------------------
Every per-image dataset has shape ``(N, H, W)``; row ``i`` belongs to image ``names[i]``.

==================  =====================================================================================
storage             chunks ``(chunk_items, H, W)`` (default 1 image per chunk, so reading one image
                    decompresses exactly one chunk), gzip level 4 with the byte-shuffle filter
``names``           ``(N,)`` variable-length UTF-8 strings, contiguous; the image's relative name (the
                    key used to match the file against a dataset; unique)
root attributes     ``kind`` (``"depth"`` | ``"pseudo_labels"``), ``height``, ``width`` (int),
                    ``complete`` (bool, True once all N items are written), ``json_attrs`` (names of
                    the attributes stored as JSON text; the readers decode them back into dicts)
==================  =====================================================================================

Depth file (:data:`DEPTH_SCHEMA`, ``kind="depth"``)
---------------------------------------------------
==============  =========  =========  ===================================================================
dataset         dtype      shape      meaning
==============  =========  =========  ===================================================================
``inv_depth``   float32    (N, H, W)  CorDA inverse-depth target ``t`` (method.md §2.2): metric depth
                                      ``t = 655.36 / (z + 0.01)``, mono ``raw/256 + 1``; ≥ 1 always and
                                      **exactly 1.0 = invalid** (BerHu compares with ``== 1.0``)
``depth_m``     float16    (N, H, W)  metric depth in metres for diagnostics/plots; NaN = invalid
                                      (float16: ≤ 0.25 m resolution at 500 m, fine for metrics)
``names``       str        (N,)       image names
==============  =========  =========  ===================================================================

Attributes: ``kind="depth"``, ``encoding`` (text of the encoding above), ``min_depth_m``,
``max_depth_m`` (float, the depth range of the producing network / clip range), ``mode``
(``"ground_truth" | "stereo" | "mono" | "mono+stereo" | "files"``: released depth, corda.data.depth_files), ``model_hash`` (hash of the depth network
checkpoint, ``""`` for ground truth), ``domain`` (e.g. ``"cityscapes"``), ``height``, ``width``.

Pseudo-label file (:data:`PSEUDO_SCHEMA`, ``kind="pseudo_labels"``)
-------------------------------------------------------------------
================  =======  =========  ===================================================================
dataset           dtype    shape      meaning
================  =======  =========  ===================================================================
``label``         uint8    (N, H, W)  teacher argmax, trainIds in ``[0, len(class_names))``; 255 = ignore
``confidence``    float16  (N, H, W)  teacher softmax max ``q_max`` in [0, 1] (method.md §3.2)
``depth_weight``  float16  (N, H, W)  depth-discrepancy weight ω in [0.001, 1] (method.md §4); 1 where
                                      the depth target is invalid
``weight``        float16  (N, H, W)  the final per-pixel weight self-training multiplies the CE with
                                      (≥ 0; how it is built from the others is the ``weight_rule``)
``names``         str      (N,)       image names
================  =======  =========  ===================================================================

(H, W) is the size self-training reads the maps at (``train.target_resize_hw``, nearest from the teacher's
full-size maps; the images' own size when that is null): 7 bytes per pixel raw, 3.7 MB per frame at 512×1024.

Attributes: ``kind="pseudo_labels"``, ``class_names`` (list of str), ``threshold`` (float, the
confidence threshold 0.968 of §3.3), ``checkpoint_hash`` (hash of the model that produced them),
``params`` (dict, stored as JSON: the stage's parameters), ``weight_rule`` (text, e.g.
``"q * omega / mean(omega)"``), ``height``, ``width``.

Reading
-------
:func:`open_h5` validates a file (exists, is HDF5, not truncated, ``complete``, right ``kind``) and
raises :class:`corda.errors.DataError` telling the user which ``dvc repro`` re-creates it.
:class:`DepthH5` and :class:`PseudoLabelH5` are random-access readers for datasets: they validate the
schema eagerly, then open the file lazily once per process, so they pickle and work inside DataLoader
workers. Arrays are returned in their stored dtypes (cast at the call site).
"""

from corda.h5io.schema import (  # noqa: F401
    DEPTH_ENCODING,
    DEPTH_MODES,
    DEPTH_SCHEMA,
    H5Schema,
    JSON_ATTRS_KEY,
    PSEUDO_SCHEMA,
)
from corda.h5io.attrs import (  # noqa: F401
    read_attrs,
)
from corda.h5io.writer import (  # noqa: F401
    H5StreamWriter,
)
from corda.h5io.reader import (  # noqa: F401
    open_h5,
)
from corda.h5io.depth import (  # noqa: F401
    DepthH5,
    source_depth_h5,
    write_depth_h5,
    write_source_in_place,
)
from corda.h5io.pseudo import (  # noqa: F401
    PseudoLabelH5,
    merge_pseudo_h5,
    pseudo_rows,
    write_pseudo_h5,
)
