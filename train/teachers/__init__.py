"""What a student learns from: the teacher, its targets and how good they are.

    source.py             where a teacher comes from: kind, existence, fingerprint, loading (one place)
    foreign.py            PyTorch teachers trained elsewhere: hf:DIR, torchvision:NAME:WEIGHTS, smp:DIR
    backend_teacher.py    an exported model (.onnx, .xml, .engine) as a logits-only teacher
    class_map.py          a teacher's classes onto the student's (log-sum-exp per group)

    cache_format.py       the teacher target cache on disk: modes, keys, manifest, files, exact-mode samples
    cache_build.py        building a cache (resumable)
    targets.py            reading one in training (TeacherTargets), opening it for a run, agreement check
    geometry.py           a sample's scale/crop/flip, and warping a cached map to it
    class_scores.py       the teacher's per-class IoU, with a warning for classes at 0 IoU
    knowledge_quality.py  ranking a teacher's layers by the knowledge they hold (FKD layer choice)
"""
