import math

import pytest
import torch

from runtime.errors import UserError
from train.losses.kd import kd_loss
from train.teachers.class_map import ClassMap, class_map

TEACHER = ["road", "car", "truck"]
STUDENT = ["road", "vehicle"]


def test_three_teacher_classes_onto_two_by_hand(tmp_path):
    spec = tmp_path / "map.yaml"
    spec.write_text("vehicle: [car, truck]\n")
    cmap = class_map(STUDENT, TEACHER, str(spec))
    assert cmap is not None and cmap.groups == [[0], [1, 2]]
    z = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    mapped = cmap.apply(z)
    e1, e2, e3 = math.e, math.e ** 2, math.e ** 3
    assert mapped.flatten().tolist() == pytest.approx([1.0, math.log(e2 + e3)], rel=1e-6)
    p = [e1 / (e1 + e2 + e3), (e2 + e3) / (e1 + e2 + e3)]  # the teacher's mass over {road}, {car, truck}
    assert mapped.softmax(1).flatten().tolist() == pytest.approx(p, rel=1e-6)
    # KD against a student with q = softmax([0.5, -0.5]), by hand: Σ_k p_k (log p_k − log q_k)
    z_s = torch.tensor([0.5, -0.5]).view(1, 2, 1, 1)
    q0 = math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5))
    q = [q0, 1 - q0]
    kl = sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q))
    assert kd_loss(z_s, mapped, 1.0).item() == pytest.approx(kl, rel=1e-5)
    assert STUDENT[int(mapped.argmax(1))] == "vehicle"


def test_map_by_name_with_other_spellings_and_other_classes_dropped():
    cmap = class_map(["Traffic Light", "road", "person"], ["person", "sky", "traffic_light", "ROAD"])
    assert cmap is not None and cmap.groups == [[2], [3], [0]]
    z = torch.randn(2, 4, 3, 5)
    assert torch.equal(cmap.apply(z), z[:, [2, 3, 0]])


def test_yaml_ids_mixed_with_names_and_unlisted_classes_by_name():
    cmap = class_map(["road", "vehicle", "person"], ["road", "car", "truck", "person"],
                     {"vehicle": [1, "Truck"]})
    assert cmap is not None and cmap.groups == [[0], [1, 2], [3]]
    z = torch.randn(1, 4, 2, 2)
    expected = torch.stack([z[:, 0], torch.logsumexp(z[:, 1:3], 1), z[:, 3]], 1)
    torch.testing.assert_close(cmap.apply(z), expected)
    back = ClassMap.from_dict(cmap.to_dict())
    assert back == cmap


def test_identical_lists_need_no_map():
    assert class_map(TEACHER, TEACHER) is None
    assert class_map(["road", "car"], ["Road", "car"]) is None  # same classes, other spelling: still identity
    assert class_map(["road", "car"], ["road", "car"], {"car": ["car"]}) is None


def test_refusal_lists_the_unmapped_student_classes_in_one_sentence():
    with pytest.raises(UserError) as e:
        class_map(["road", "vehicle", "bicycle"], TEACHER)
    msg = str(e.value)
    assert "vehicle, bicycle" in msg and "road, car, truck" in msg
    assert "distill.class_map=FILE.yaml" in msg and "vehicle: [car, truck]" in msg
    assert "\n" not in msg


def test_unnamed_teacher_classes_never_match_by_name():
    with pytest.raises(UserError, match="have no names"):
        class_map(["class0", "class1"], ["class0", "class1", "class2"])
    cmap = class_map(["a", "b"], ["class0", "class1", "class2"], {"a": [0], "b": [1, 2]})
    assert cmap is not None and cmap.groups == [[0], [1, 2]]


def test_long_teacher_lists_are_truncated():
    teacher = [f"thing{i}" for i in range(150)]
    with pytest.raises(UserError) as e:
        class_map(["road"], teacher)
    assert "150 in all" in str(e.value) and "thing149" not in str(e.value)


@pytest.mark.parametrize("spec, match", [
    ({"vehicle": ["car", "truck"], "road": ["road", "car"]}, "'car' is listed for both"),
    ({"vehicle": ["car", "car", "truck"]}, "'car' is listed twice"),
    ({"vehicle": ["car", "bus"]}, "'bus', which is not a teacher class"),
    ({"vehicle": [1, 7]}, "id 7"),
    ({"lorry": ["truck"]}, "'lorry', which is not a student class"),
    ({"vehicle": [{"a": 1}]}, "give a list of teacher class"),
])
def test_bad_maps_name_the_culprit(spec, match):
    with pytest.raises(UserError, match=match):
        class_map(STUDENT, TEACHER, spec)


def test_missing_or_bad_yaml_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml.*does not exist"):
        class_map(STUDENT, TEACHER, str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- car\n- truck\n")
    with pytest.raises(UserError, match="not a mapping"):
        class_map(STUDENT, TEACHER, str(bad))
