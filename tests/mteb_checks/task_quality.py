"""mteb's own task-quality checks, vendored from mteb's test suite (not shipped in its wheel).

Source: embeddings-benchmark/mteb tests/test_tasks/test_task_quality.py at a905523d (mteb 2.26.x), the helpers
below ``KNOWN_ISSUES`` unchanged; mteb's known-issue list (of mteb's tasks) is dropped here. Used by
tests/test_task_conformance.py on every task we register, with our own known-issue list and its reasons.
"""
# ruff: noqa
import math
from typing import Any, cast

from mteb.abstasks import AbsTask

KNOWN_ISSUES: dict[str, list[str]] = {}  # ours, with reasons: tests/test_task_conformance.py
from mteb.types.statistics import (
    AudioStatistics,
    ImageStatistics,
    LabelStatistics,
    RelevantDocsStatistics,
    ScoreStatistics,
    SplitDescriptiveStatistics,
    TextStatistics,
    TopRankedStatistics,
    VideoStatistics,
)

_DUPLICATE_RATIO_TOLERANCE = 0.01
# Large corpora routinely contain a small fraction of naturally-repeated
# short items (numbers, single words, boilerplate phrases, common audio
# clips reused across pairs, ...) without that being a quality problem, so
# an exact `unique_count == expected_count` requirement is too strict; the
# duplicate check only fires once the *share* of duplicates exceeds this.

# Values strictly greater than this many pixels (on both width and height)
# are required; e.g. 8 means an 8px-wide image is flagged as too small.
_MIN_IMAGE_DIMENSION = 8

_LENGTH_OUTLIER_RATIO = 50
_DURATION_OUTLIER_RATIO = 50
_DIMENSION_OUTLIER_RATIO = 20

# Outlier checks are reported as warnings, not failures
_WARNING_CHECK_KINDS = {"long_text", "long_audio", "long_video", "large_video_frame"}

assert not (set(KNOWN_ISSUES) & _WARNING_CHECK_KINDS), (
    "A warning-kind check must not appear in KNOWN_ISSUES (it can never fail "
    "the test, so listing it would make the stale-entry check permanently fire)."
)

_AV_DURATION_RELATIVE_TOLERANCE = 0.05

_DUPLICATE_CHECK_EXEMPT_SUFFIXES = ("1_statistics", "2_statistics")
# Fields where `expected_count` (== num_samples) is *known* to be the wrong
# denominator by construction -- several summaries/labels are packed into
# each row, so `unique_texts` naturally exceeding num_samples several-fold
# isn't a stats bug, just a field this test has no accurate count for.
_DUPLICATE_CHECK_EXEMPT_FIELDS = {
    "candidates_labels_text_statistics",
    "human_summaries_statistics",
    "machine_summaries_statistics",
}


def _is_duplicate_check_exempt(field: str) -> bool:
    return (
        field.endswith(_DUPLICATE_CHECK_EXEMPT_SUFFIXES)
        or field in _DUPLICATE_CHECK_EXEMPT_FIELDS
    )


def _is_impossible_count_exempt(field: str) -> bool:
    return field in _DUPLICATE_CHECK_EXEMPT_FIELDS


def _expected_unique_count(
    field: str,
    num_samples: int | None,
    num_queries: int | None,
    num_documents: int | None,
) -> int | None:
    """The row count a field's `unique_*` should be compared against.

    For Retrieval, `num_samples` is `num_queries + num_documents` combined,
    not "one row per unique value" for either `documents_*` or `queries_*`
    fields individually -- those need their own, correct denominator.
    """
    if field.startswith("documents_"):
        return num_documents
    if field.startswith("queries_"):
        return num_queries
    return num_samples


def _is_duplicated(num_samples: int, unique_count: int) -> bool:
    """True once the duplicate share exceeds `_DUPLICATE_RATIO_TOLERANCE`."""
    return unique_count < num_samples * (1 - _DUPLICATE_RATIO_TOLERANCE)


def _is_outlier(average: float | None, value: float | None, ratio: float) -> bool:
    """True once `value` exceeds `average` by more than `ratio`x."""
    return (
        average is not None
        and value is not None
        and average > 0
        and value > average * ratio
    )


def _is_below_min(value: float | None, minimum: float) -> bool:
    return value is not None and not (value > minimum)


def _iter_stat_fields(split_stats: SplitDescriptiveStatistics) -> list[tuple[str, Any]]:
    """Top-level (field_name, value) pairs holding nested statistics dicts.

    Skips ``hf_subset_descriptive_stats``, which is handled separately by the
    caller since it holds per-language *splits*, not a statistics dict.
    """
    return [
        (key, value)
        for key, value in split_stats.items()
        if key != "hf_subset_descriptive_stats" and isinstance(value, dict)
    ]


def _text_field_quality(
    name: str, split: str, field: str, stats: TextStatistics
) -> tuple[int, list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    min_text_length = stats["min_text_length"]
    if not (min_text_length > 3):
        errors.append(
            (
                f"short_text:{field}",
                f"{name} ({split}) contains documents which are extremely short in {field} ({min_text_length=}), this likely indicate poor quality samples.",
            )
        )

    max_text_length = stats["max_text_length"]
    average_text_length = stats["average_text_length"]
    if _is_outlier(average_text_length, max_text_length, _LENGTH_OUTLIER_RATIO):
        errors.append(
            (
                f"long_text:{field}",
                f"{name} ({split}) contains a document far longer than the rest of {field} ({max_text_length=}, {average_text_length=}), this can indicate a truncation/concatenation bug.",
            )
        )

    return stats["unique_texts"], errors


def _image_field_quality(
    name: str, split: str, field: str, stats: ImageStatistics
) -> tuple[int, list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    min_image_width = stats["min_image_width"]
    min_image_height = stats["min_image_height"]
    if not (min_image_width > _MIN_IMAGE_DIMENSION) or not (
        min_image_height > _MIN_IMAGE_DIMENSION
    ):
        errors.append(
            (
                f"small_image:{field}",
                f"{name} ({split}) contains images which are extremely small in {field} ({min_image_width=}, {min_image_height=}), this likely indicate poor quality samples.",
            )
        )
    return stats["unique_images"], errors


def _audio_field_quality(
    name: str, split: str, field: str, stats: AudioStatistics
) -> tuple[int, list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []

    min_duration_seconds = stats["min_duration_seconds"]
    if not (min_duration_seconds > 0):
        errors.append(
            (
                f"zero_length_audio:{field}",
                f"{name} ({split}) has zero-length audio clips in {field} ({min_duration_seconds=})",
            )
        )

    max_duration_seconds = stats["max_duration_seconds"]
    average_duration_seconds = stats["average_duration_seconds"]
    if _is_outlier(
        average_duration_seconds, max_duration_seconds, _DURATION_OUTLIER_RATIO
    ):
        errors.append(
            (
                f"long_audio:{field}",
                f"{name} ({split}) has an audio clip far longer than the rest of {field} ({max_duration_seconds=}, {average_duration_seconds=}), this can indicate a wrong clip boundary.",
            )
        )

    return stats["unique_audios"], errors


def _video_field_quality(
    name: str, split: str, field: str, stats: VideoStatistics
) -> tuple[int, list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []

    min_duration_seconds = stats.get("min_duration_seconds")
    if min_duration_seconds is not None and not (min_duration_seconds > 0):
        errors.append(
            (
                f"zero_length_video:{field}",
                f"{name} ({split}) has zero-length video clips in {field} ({min_duration_seconds=})",
            )
        )

    min_width = stats.get("min_width")
    min_height = stats.get("min_height")
    if _is_below_min(min_width, _MIN_IMAGE_DIMENSION) or _is_below_min(
        min_height, _MIN_IMAGE_DIMENSION
    ):
        errors.append(
            (
                f"small_video:{field}",
                f"{name} ({split}) contains video frames which are extremely small in {field} ({min_width=}, {min_height=}), this likely indicate poor quality samples.",
            )
        )

    max_duration_seconds = stats.get("max_duration_seconds")
    average_duration_seconds = stats.get("average_duration_seconds")
    if _is_outlier(
        average_duration_seconds, max_duration_seconds, _DURATION_OUTLIER_RATIO
    ):
        errors.append(
            (
                f"long_video:{field}",
                f"{name} ({split}) has a video clip far longer than the rest of {field} ({max_duration_seconds=}, {average_duration_seconds=}), this can indicate a wrong clip boundary.",
            )
        )

    max_width = stats.get("max_width")
    average_width = stats.get("average_width")
    max_height = stats.get("max_height")
    average_height = stats.get("average_height")
    if _is_outlier(average_width, max_width, _DIMENSION_OUTLIER_RATIO) or _is_outlier(
        average_height, max_height, _DIMENSION_OUTLIER_RATIO
    ):
        errors.append(
            (
                f"large_video_frame:{field}",
                f"{name} ({split}) has a video frame far larger than the rest of {field} ({max_width=}, {average_width=}, {max_height=}, {average_height=}), this can indicate a mis-decoded frame.",
            )
        )

    return stats["unique_videos"], errors


def _label_field_quality(
    name: str, split: str, field: str, stats: LabelStatistics
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    unique_labels = stats["unique_labels"]
    if unique_labels < 2:
        errors.append(
            (
                f"too_few_labels:{field}",
                f"{name} ({split}) has fewer than 2 unique labels in {field} ({unique_labels=})",
            )
        )
    return errors


def _label_or_score_field_quality(
    name: str, split: str, field: str, stats: dict[str, Any]
) -> list[tuple[str, str]]:
    """Checks the remaining (non-media, non-duplicate-eligible) shapes."""
    if "unique_labels" in stats:
        return _label_field_quality(name, split, field, cast("LabelStatistics", stats))

    if "min_score" in stats and "max_score" in stats:
        score_stats = cast("ScoreStatistics", stats)
        if score_stats["min_score"] == score_stats["max_score"]:
            return [
                (
                    f"zero_label_variance:{field}",
                    f"{name} ({split}) has zero label variance in {field} (min_score == max_score == {score_stats['min_score']})",
                )
            ]

    elif "min_relevant_docs_per_query" in stats:
        relevant_docs_stats = cast("RelevantDocsStatistics", stats)
        if relevant_docs_stats["min_relevant_docs_per_query"] == 0:
            return [
                (
                    f"zero_relevant_docs:{field}",
                    f"{name} ({split}) has queries with zero relevant documents in {field}",
                )
            ]

    elif "min_top_ranked_per_query" in stats:
        top_ranked_stats = cast("TopRankedStatistics", stats)
        if top_ranked_stats["min_top_ranked_per_query"] == 0:
            return [
                (
                    f"zero_top_ranked:{field}",
                    f"{name} ({split}) has queries with zero top-ranked candidates in {field}",
                )
            ]

    return []


def _field_quality(
    name: str,
    split: str,
    field: str,
    stats: dict[str, Any],
    expected_count: int | None,
) -> list[tuple[str, str]]:
    unique_count: int | None = None
    modality: str | None = None

    if "unique_texts" in stats:
        modality = "text"
        unique_count, errors = _text_field_quality(
            name, split, field, cast("TextStatistics", stats)
        )
    elif "unique_images" in stats:
        modality = "image"
        unique_count, errors = _image_field_quality(
            name, split, field, cast("ImageStatistics", stats)
        )
    elif "unique_audios" in stats:
        modality = "audio"
        unique_count, errors = _audio_field_quality(
            name, split, field, cast("AudioStatistics", stats)
        )
    elif "unique_videos" in stats:
        modality = "video"
        unique_count, errors = _video_field_quality(
            name, split, field, cast("VideoStatistics", stats)
        )
    else:
        errors = _label_or_score_field_quality(name, split, field, stats)

    if (
        unique_count is not None
        and expected_count is not None
        and not _is_duplicate_check_exempt(field)
        and _is_duplicated(expected_count, unique_count)
    ):
        errors.append(
            (
                f"duplicate_{modality}:{field}",
                f"{name} ({split}) contains {modality} duplicates in {field} ({expected_count=}, unique_{modality}s={unique_count})",
            )
        )
    elif (
        unique_count is not None
        and expected_count is not None
        and not _is_impossible_count_exempt(field)
        and unique_count > expected_count
    ):
        errors.append(
            (
                f"impossible_unique_count:{field}",
                f"{name} ({split}) has more unique {modality}s in {field} than possible ({expected_count=}, unique_{modality}s={unique_count}) -- the stats are internally inconsistent.",
            )
        )

    return errors


def _relevant_docs_bound_quality(
    name: str, split: str, split_stats: SplitDescriptiveStatistics
) -> list[tuple[str, str]]:
    """Relevant docs referenced in qrels must be a subset of the corpus."""
    relevant_docs_stats = split_stats.get("relevant_docs_statistics")
    num_documents = split_stats.get("num_documents")
    if not isinstance(relevant_docs_stats, dict) or num_documents is None:
        return []

    unique_relevant_docs = relevant_docs_stats.get("unique_relevant_docs")
    if unique_relevant_docs is not None and unique_relevant_docs > num_documents:
        return [
            (
                "relevant_docs_exceed_corpus",
                f"{name} ({split}) has more unique relevant docs than documents in the corpus ({unique_relevant_docs=}, {num_documents=}), qrels likely reference IDs missing from the corpus.",
            )
        ]
    return []


def _audio_video_pair_quality(
    name: str, split: str, split_stats: SplitDescriptiveStatistics
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    fields = dict(_iter_stat_fields(split_stats))
    for field, stats in fields.items():
        if "unique_audios" not in stats:
            continue
        video_field = field.replace("audio", "video")
        video_stats = fields.get(video_field)
        if not isinstance(video_stats, dict) or "unique_videos" not in video_stats:
            continue

        audio_value = stats.get("average_duration_seconds")
        video_value = video_stats.get("average_duration_seconds")
        if audio_value is None or video_value is None:
            continue
        if not math.isclose(
            audio_value, video_value, rel_tol=_AV_DURATION_RELATIVE_TOLERANCE
        ):
            errors.append(
                (
                    f"audio_video_length_mismatch:{field}",
                    f"{name} ({split}) has mismatched average_duration_seconds between {field} ({audio_value}) and {video_field} ({video_value})",
                )
            )

    return errors


def _split_quality(
    name: str, split: str, split_stats: SplitDescriptiveStatistics
) -> list[tuple[str, str]]:
    """Runs all checks against a single split's statistics"""
    errors: list[tuple[str, str]] = []

    num_samples = cast("int | None", split_stats.get("num_samples"))
    if num_samples is not None and num_samples == 0:
        errors.append(
            ("empty_split", f"{name} ({split}) has no samples ({num_samples=})")
        )

    unique_pairs = cast("int | None", split_stats.get("unique_pairs"))
    if unique_pairs is not None and num_samples is not None:
        if _is_duplicated(num_samples, unique_pairs):
            errors.append(
                (
                    "duplicate_pairs",
                    f"{name} ({split}) contains duplicate pairs ({num_samples=}, {unique_pairs=})",
                )
            )
        elif unique_pairs > num_samples:
            errors.append(
                (
                    "impossible_unique_count",
                    f"{name} ({split}) has more unique pairs than possible ({num_samples=}, {unique_pairs=}) -- the stats are internally inconsistent.",
                )
            )

    num_queries = cast("int | None", split_stats.get("num_queries"))
    num_documents = cast("int | None", split_stats.get("num_documents"))
    for field, stats in _iter_stat_fields(split_stats):
        expected_count = _expected_unique_count(
            field, num_samples, num_queries, num_documents
        )
        errors += _field_quality(name, split, field, stats, expected_count)

    errors += _relevant_docs_bound_quality(name, split, split_stats)
    errors += _audio_video_pair_quality(name, split, split_stats)

    # train-test leakage
    samples_in_train = split_stats.get("samples_in_train", None)
    if not (samples_in_train is None or samples_in_train == 0):
        errors.append(
            (
                "train_test_leakage",
                f"{name} ({split}) has an overlap between train and test ({samples_in_train=})",
            )
        )
    return errors


def _task_quality(task: AbsTask) -> list[tuple[str, str]]:
    """Returns ``(check_id, message)`` pairs; see `_split_quality`."""
    desc_stats = task.metadata.descriptive_stats
    name = task.metadata.name

    if desc_stats is None:
        return []

    findings: list[tuple[str, str]] = []
    for split_name, split_stats in desc_stats.items():
        findings += _split_quality(name, split_name, split_stats)

        hf_subset_stats = split_stats.get("hf_subset_descriptive_stats")
        if not hf_subset_stats:
            continue

        subsets_by_check: dict[str, list[str]] = {}
        for hf_subset, subset_stats in hf_subset_stats.items():
            for check_id, _ in _split_quality(
                f"{name} [{hf_subset}]", split_name, subset_stats
            ):
                subsets_by_check.setdefault(check_id, []).append(hf_subset)

        for check_id, subsets in subsets_by_check.items():
            shown = ", ".join(subsets[:5])
            more = f", +{len(subsets) - 5} more" if len(subsets) > 5 else ""
            findings.append(
                (
                    check_id,
                    f"{name} ({split_name}) fails '{check_id}' in {len(subsets)} hf_subset(s): {shown}{more}",
                )
            )

    return findings


