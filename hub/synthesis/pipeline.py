"""Synthesis from start to finish: sources → checks → plan → optimise → sample → archive.

    manifest = synthesize(SynthesisOptions(generator="runs/g1", labeller="runs/l1",
                                           out_dir=Path("archives/a1"), num_images=1000))

Every check (sources, resolution, label space, label file, size) runs in
:func:`prepare_synthesis`, before the archive folder is touched. :func:`run_synthesis`
then works through the plan's patients that the journal does not list yet.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hub.audit.gate import AuditGate
from hub.synthesis.archive import (
    ArchivePlan,
    ArchiveWriter,
    ImageRecord,
    JournalState,
    PatientRecord,
    PlannedPatient,
    image_index,
)
from hub.synthesis.class_optimisation import (
    BatchedClassOptimiser,
    ClassOptimisationSettings,
    Converged,
    GaveUp,
    Start,
    make_start,
    severity_jitter,
    start_seed,
    truncated_normal,
)
from hub.synthesis.joint_labels import fit_joint_model, plan_label_vectors, site_prevalence
from hub.synthesis.local_sampling import (
    LocalSamplingSettings,
    PatientRequest,
    PatientSeries,
    finding_labels,
    sample_patients,
)
from hub.synthesis.prevalence import PREVALENCE_FILE, prevalence_rows, severity_summary
from hub.synthesis.sources import (
    GeneratorSource,
    LabellerSource,
    Puller,
    check_compatible,
    default_device,
    resolve_generator,
    resolve_labeller,
)
from hub.synthesis.targets import allocate_targets, plan_series_sizes, target_weights
from shared.artifacts.archive import ArchiveManifest, ClassSummary
from shared.artifacts.audit_state import AuditDecision
from shared.artifacts.keyring import SignerKeys
from shared.artifacts.labeller import ClassMetrics, LabellerCard
from shared.errors import ConfigError
from shared.labels import NIH_LABELS, NO_FINDING

__all__ = [
    "SynthesisJob",
    "SynthesisOptions",
    "prepare_synthesis",
    "prevalence_report",
    "run_synthesis",
    "synthesize",
    "usable_thresholds",
]

log = logging.getLogger("radshare.hub.synthesis")

#: ``progress(images_written)`` after each patient.
Progress = Callable[[int], None]

#: The "threshold" of a start with no class to reach (No Finding, not callable): none.
_NO_FLOOR_LOGIT = -1e9


@dataclass(frozen=True)
class SynthesisOptions:
    """What ``radshare-hub synthesize`` was asked for."""

    generator: str
    labeller: str
    out_dir: Path
    num_images: int
    labels: str = "match-site"
    unlabelled: bool = False
    seed: int = 0
    device: str = "auto"
    optimisation: ClassOptimisationSettings = field(default_factory=ClassOptimisationSettings)
    sampling: LocalSamplingSettings = field(default_factory=LocalSamplingSettings)
    max_attempts_per_patient: int = 20
    #: Redraw the severity jitter on every retry: the biased behaviour before (hard,
    #: severe targets fail, are redrawn milder, and kept patients skew mild); only to measure.
    redraw_severity: bool = False
    #: Retries that keep the patient's drawn severity (new z0 only); later attempts, up to
    #: ``max_attempts_per_patient``, redraw it so that a severity the generator cannot
    #: reach does not cost the patient (and its labels, the archive's prevalence). The
    #: report counts such patients and measures what is left of the bias.
    severity_kept_attempts: int = 10
    min_labeller_val_auc: float = 0.5
    pull_dir: Path = Path("pulled")
    override_audit: str | None = None  # --override-audit: recorded, and in the manifest
    trusted: SignerKeys | None = None  # --keyring: verifies bundles (None: bundles refused)
    trust_local_export: bool = False  # --trust-local-export: accept unsigned training exports


@dataclass(frozen=True)
class SynthesisJob:
    """A checked synthesis, ready to run."""

    options: SynthesisOptions
    generator: GeneratorSource
    labeller: LabellerSource
    plan: ArchivePlan
    device: torch.device

    @property
    def class_names(self) -> tuple[str, ...]:
        """The labeller's output order."""
        return self.labeller.card.labeller_config.class_names

    @property
    def youden(self) -> list[float | None]:
        """Youden thresholds in logit units, in output order; None for unusable classes."""
        return usable_thresholds(self.labeller.card, self.options.min_labeller_val_auc)


def usable_thresholds(card: LabellerCard, min_val_auc: float) -> list[float | None]:
    """Each class's Youden threshold, or None where the labeller cannot call the class.

    A class needs a threshold and a validation AUC above ``min_val_auc`` with 95%
    confidence: the lower end of the card's bootstrap CI (a card without one, from an
    older labeller or FedAvg, is judged on the point estimate). Otherwise Youden's
    cut-off is arbitrary: on site a at 32 px a labeller with val AUCs of 0.53-0.57 set
    cut-offs that most generator samples exceed, so "no finding" targets were
    unreachable and a positive label in the archive meant nothing.
    """

    def above_chance(c: ClassMetrics) -> bool:
        if c.val_auc is None:
            return False
        low = c.val_auc if c.val_auc_ci95 is None else c.val_auc_ci95[0]
        return c.val_auc > min_val_auc and low > min_val_auc

    return [c.threshold_logit if above_chance(c) else None for c in card.classes]


def _settings_for_plan(options: SynthesisOptions) -> dict:
    # Batch sizes and the device change speed, not content: a run may resume with others.
    opt = {k: v for k, v in dataclasses.asdict(options.optimisation).items() if k != "batch_size"}
    sampling = {k: v for k, v in dataclasses.asdict(options.sampling).items() if k != "batch_size"}
    return {
        "optimisation": opt,
        "sampling": sampling,
        "max_attempts_per_patient": options.max_attempts_per_patient,
        "min_labeller_val_auc": options.min_labeller_val_auc,
        "redraw_severity": options.redraw_severity,
        "severity_kept_attempts": options.severity_kept_attempts,
    }


def _site_prevalence(
    generator: GeneratorSource, labeller: LabellerSource
) -> dict[str, float] | None:
    """The site's prevalence per label: the generator's counts, else the labeller's; None."""
    if generator.counts_per_label and generator.num_train_images:
        return site_prevalence(generator.counts_per_label, generator.num_train_images)
    train = labeller.card.data.images_per_split.get("train")
    if train:
        return site_prevalence({c.name: c.train_positives for c in labeller.card.classes}, train)
    return None


def _joint_targets(
    options: SynthesisOptions,
    generator: GeneratorSource,
    labeller: LabellerSource,
    judgeable: Sequence[str],
    num_patients: int,
) -> tuple[list[tuple[str, ...]], dict[str, float], str] | None:
    """match-site label vectors, the target prevalence and a note; None without site counts."""
    prevalence = _site_prevalence(generator, labeller)
    findings = [n for n in judgeable if n != NO_FINDING]
    if prevalence is None or not findings:
        return None
    model = fit_joint_model(prevalence, findings)
    vectors = plan_label_vectors(num_patients, model, options.seed)
    return vectors, model.marginals(), model.note


def _plan(
    options: SynthesisOptions,
    generator: GeneratorSource,
    labeller: LabellerSource,
    audit: AuditDecision | None = None,
) -> ArchivePlan:
    sizes = plan_series_sizes(options.num_images, options.seed)
    thresholds = usable_thresholds(labeller.card, options.min_labeller_val_auc)
    judgeable = [
        c.name for c, t in zip(labeller.card.classes, thresholds, strict=True) if t is not None
    ]
    labeller_counts = {c.name: c.train_positives for c in labeller.card.classes}
    joint = None
    if not options.unlabelled and options.labels == "match-site":
        joint = _joint_targets(options, generator, labeller, judgeable, len(sizes))
    vectors: Sequence[tuple[str, ...] | None] = [None] * len(sizes)
    prevalence: dict[str, float] = {}
    note = ""
    if options.unlabelled:
        weights: dict[str, float] = {}
        targets: Sequence[str | None] = [None] * len(sizes)
    elif joint is not None:
        vectors, prevalence, note = joint
        targets = [_primary(v, labeller.card.labeller_config.class_names) for v in vectors]
        weights = {n: targets.count(n) / len(targets) for n in judgeable if n in targets}
    else:
        weights = target_weights(
            options.labels, judgeable, generator.counts_per_label, labeller_counts
        )
        targets = allocate_targets(len(sizes), weights, options.seed)
    patients = [
        PlannedPatient(
            patient_id=i + 1, target_class=t, num_images=k,
            target_labels=None if v is None else list(v),
        )
        for i, (t, k, v) in enumerate(zip(targets, sizes, vectors, strict=True))
    ]  # fmt: skip
    return ArchivePlan(
        generator_id=generator.artifact_id,
        labeller_id=labeller.artifact_id,
        resolution_px=generator.config.resolution_px,
        requested_images=options.num_images,
        labels="unlabelled" if options.unlabelled else options.labels,
        unlabelled=options.unlabelled,
        seed=options.seed,
        callable_classes=judgeable,
        site_id=generator.site_id,
        annotated_labels=[n for n in NIH_LABELS if n in {*judgeable, NO_FINDING}],
        target_weights=weights,
        settings=_settings_for_plan(options),
        patients=patients,
        audit=audit,
        target_prevalence=prevalence,
        target_note=note,
    )


def _primary(vector: Sequence[str], class_names: Sequence[str]) -> str:
    """A label vector's primary target: its first label in the labeller's output order."""
    return min(vector, key=list(class_names).index)


def prepare_synthesis(
    options: SynthesisOptions, puller: Puller | None = None, gate: AuditGate | None = None
) -> SynthesisJob:
    """Load and check everything; raises before any archive file is written.

    ``gate`` applies the hub's audit policy to the generator (``hub.audit.gate``;
    ``radshare-hub synthesize`` always passes one): a refused generator raises before
    the labeller is loaded, and the decision (an override with who and why) goes
    into the archive's plan and manifest. Without a gate nothing is checked: only for
    tests of the synthesis mechanics.

    Raises:
        AuditPolicyError, RegistryError: the audit policy refuses the generator.
        ConfigError: bad size, resolution mismatch, missing sources, foreign output folder.
        LabelError: labeller classes ≠ generator label space; a label file with unknown labels.
        ArtifactError: a source that fails verification.
    """
    if options.num_images < 1:
        raise ConfigError(f"--size: must be >= 1, got {options.num_images}")
    if options.max_attempts_per_patient < 1:
        raise ConfigError("max_attempts_per_patient must be >= 1")
    # Load the networks, from folders or the registry.
    keys, local = options.trusted, options.trust_local_export
    generator = resolve_generator(
        options.generator, puller=puller, pull_dir=options.pull_dir, trusted=keys,
        trust_local_export=local,
    )  # fmt: skip
    # Clear the generator with the hub's audit policy (by its registry id).
    audit = None if gate is None else gate.clear(generator.artifact_id, options.override_audit)
    labeller = resolve_labeller(
        options.labeller, puller=puller, pull_dir=options.pull_dir, trusted=keys,
        trust_local_export=local,
    )  # fmt: skip
    # Check that the labeller can judge this generator's images.
    check_compatible(generator, labeller)
    # Choose the class mix and plan every patient.
    plan = _plan(options, generator, labeller, audit)
    return SynthesisJob(options, generator, labeller, plan, default_device(options.device))


def synthesize(
    options: SynthesisOptions, puller: Puller | None = None, progress: Progress | None = None
) -> ArchiveManifest:
    """Prepare and run a synthesis (resuming an interrupted one with the same options)."""
    return run_synthesis(prepare_synthesis(options, puller), progress)


def run_synthesis(job: SynthesisJob, progress: Progress | None = None) -> ArchiveManifest:
    """Write (or finish) the archive of ``job``; returns its manifest."""
    writer = ArchiveWriter(job.options.out_dir, job.plan)
    if writer.complete:
        log.info("archive already complete; nothing to do")
        return writer.read_manifest()
    state = writer.replay()
    todo = [p for p in job.plan.patients if p.patient_id not in state.finished]
    log.info(
        "synthesis: %d of %d patients to go (%s, device %s)",
        len(todo), len(job.plan.patients), "unlabelled" if job.plan.unlabelled else job.plan.labels,
        job.device,
    )  # fmt: skip
    run = _Run(job, writer, state, progress or (lambda n: None))
    if job.plan.unlabelled:
        run.unlabelled(todo)
    else:
        run.labelled(todo)
    reports = {} if job.plan.unlabelled else {PREVALENCE_FILE: prevalence_report(job, state)}
    manifest = writer.finalise(state, _class_summaries(job, state), reports)
    log.info("archive done: %d images, %d patients", manifest.num_images, manifest.num_patients)
    return manifest


class _Run:
    """The working state of one synthesis run (journal state kept current)."""

    def __init__(
        self, job: SynthesisJob, writer: ArchiveWriter, state: JournalState, progress: Progress
    ):
        self.job, self.writer, self.state, self.progress = job, writer, state, progress
        self.G = job.generator.G.to(job.device).eval()
        self.labeller = job.labeller.labeller.to(job.device).eval()
        self.planned = {p.patient_id: p for p in job.plan.patients}
        self.class_index = {name: i for i, name in enumerate(job.class_names)}
        self.pending: deque[Start] = deque()

    # Labelled: optimise, then sample around each solution.

    def labelled(self, todo: Sequence[PlannedPatient]) -> None:
        settings = self.job.options.optimisation
        optimiser = BatchedClassOptimiser(
            self.G, self.labeller, self.job.generator.config.z_dim, settings, self.job.device
        )
        self.pending.extend(self._start(p.patient_id) for p in todo)
        flush_at = max(1, settings.batch_size // 4)
        centres: list[Converged] = []
        while self.pending or centres:
            for outcome in optimiser.run(self.pending):
                if isinstance(outcome, GaveUp):
                    self._failed(
                        outcome.start,
                        {
                            "event": "gave_up",
                            "reason": outcome.reason,
                            "steps": outcome.steps,
                            "best_logit": outcome.best_logit,
                        },
                    )
                    continue
                centres.append(outcome)
                if len(centres) >= flush_at:
                    self._sample_around(centres)
                    centres = []
            self._sample_around(centres)
            centres = []

    def _start(self, patient_id: int) -> Start:
        """The next start of a patient: its target labels, the task's severity, a new z0.

        Positives: the target labels the labeller can call (No Finding's own class when
        it is callable). Negatives: every other callable finding, for a label-vector
        target or a No Finding one (a No Finding patient carries no finding).
        """
        planned = self.planned[patient_id]
        assert planned.target_class is not None
        labels = planned.target_labels or [planned.target_class]
        youden = self.job.youden
        positives = [
            (c, y) for c, y in ((self.class_index[n], youden[self.class_index[n]]) for n in labels)
            if y is not None
        ]  # fmt: skip
        below: list[tuple[int, float]] = []
        if planned.target_labels is not None or planned.target_class == NO_FINDING:
            names = self.job.class_names
            below = [
                (c, y)
                for c, (n, y) in enumerate(zip(names, youden, strict=True))
                if y is not None and n != NO_FINDING and n not in labels
            ]
        if not positives:  # No Finding without a callable No Finding class: negatives only
            positives = [(self.class_index[NO_FINDING], _NO_FLOOR_LOGIT)]
        (c, y), *also = positives
        attempt, options = self.state.failures[patient_id], self.job.options
        redraw = options.redraw_severity or attempt >= options.severity_kept_attempts
        return make_start(
            patient_id, attempt, c, y, self.job.plan.seed, options.optimisation,
            also_youden=also, below=below, redraw_severity=redraw,
        )  # fmt: skip

    def _failed(self, start: Start, details: dict) -> None:
        event = {"patient_id": start.task, "target_class": self.job.class_names[start.target],
                 "seed": start.seed, "attempt": start.attempt, **details}  # fmt: skip
        self.writer.log_event(event)
        self.state.events.append(event)
        self.state.failures[start.task] += 1
        self.progress(0)  # no image, but a heartbeat for progress lines
        if self.state.failures[start.task] >= self.job.options.max_attempts_per_patient:
            abandoned = {"event": "abandoned", "patient_id": start.task,
                         "target_class": event["target_class"]}  # fmt: skip
            self.writer.log_event(abandoned)
            self.state.events.append(abandoned)
            self.state.abandoned.add(start.task)
        else:
            self.pending.append(self._start(start.task))

    def _sample_around(self, centres: Sequence[Converged]) -> None:
        if not centres:
            return
        requests = [self._request(c) for c in centres]
        for centre, series in zip(centres, self._sample(requests), strict=True):
            if series.complete:
                self._write(series, centre)
            else:
                self._failed(centre.start, {"event": "sampling_failure", "steps": centre.steps,
                                            "drawn": series.num_drawn,
                                            "rejected": series.num_rejected})  # fmt: skip

    def _request(self, centre: Converged) -> PatientRequest:
        """The follow-ups to draw around a converged centre, and what each must show.

        A one-class target keeps follow-ups at its ``T_c`` (as before; a No Finding one
        also with no finding called). A label-vector target (match-site) keeps follow-ups
        whose *labels* are the target's: every target finding at or above its Youden
        threshold, every other callable finding below it (Segal et al. §4.3: "the same set
        of diagnoses"); the severity is the centre's.
        """
        start = centre.start
        floor = start.threshold_logit
        also = start.also
        if self.planned[start.task].target_labels is not None:
            youden = self.job.youden
            primary = youden[start.target]
            floor = start.threshold_logit if primary is None else primary
            also = tuple((c, youden[c] or 0.0) for c, _ in start.also)
        return PatientRequest(
            task=start.task, z_centre=centre.z, num_images=self.planned[start.task].num_images,
            seed=start_seed(start.seed, 0, 1), target=start.target,
            threshold_logit=floor,
            also=also, below=start.below,
        )  # fmt: skip

    # Unlabelled: series around prior draws, labelled afterwards.

    def unlabelled(self, todo: Sequence[PlannedPatient]) -> None:
        chunk = max(1, self.job.options.sampling.batch_size // 4)
        truncation = self.job.options.optimisation.truncation
        z_dim = self.job.generator.config.z_dim
        for i in range(0, len(todo), chunk):
            requests = []
            for p in todo[i : i + chunk]:
                seed = start_seed(self.job.plan.seed, p.patient_id, 0)
                z = truncated_normal(seed, z_dim, truncation)
                requests.append(PatientRequest(p.patient_id, z, p.num_images, seed=seed))
            for series in self._sample(requests):
                self._write(series, None)

    # Shared.

    def _sample(self, requests: Sequence[PatientRequest]) -> list[PatientSeries]:
        return sample_patients(
            self.G, self.labeller, requests, self.job.options.sampling, self.job.device
        )

    def _write(self, series: PatientSeries, centre: Converged | None) -> None:
        request = series.request
        target = request.target
        images = series.images[: request.num_images]
        records = [
            ImageRecord(
                image_index=image_index(request.task, follow_up),
                follow_up=follow_up,
                finding_labels=finding_labels(logits, self.job.class_names, self.job.youden),
                achieved_logit=None if target is None else float(logits[target]),
            )
            for follow_up, logits in enumerate(series.logits[: request.num_images])
        ]
        names, youden = self.job.class_names, self.job.youden
        positives = () if centre is None else centre.start.positives()
        positives = tuple((c, t) for c, t in positives if t != _NO_FLOOR_LOGIT)
        record = PatientRecord(
            patient_id=request.task,
            target_class=None if target is None else self.job.class_names[target],
            target_labels=self.planned[request.task].target_labels,
            severity_logit={names[c]: t - (youden[c] or 0.0) for c, t in positives},
            centre_minus_youden_logit={
                names[c]: centre.logits[c] - (youden[c] or 0.0)
                for c, _ in positives
                if centre is not None and centre.logits
            },
            attempt=0 if centre is None else centre.start.attempt,
            seed=request.seed if centre is None else centre.start.seed,
            threshold_logit=request.threshold_logit,
            solution_logit=None if centre is None else centre.logit,
            steps=0 if centre is None else centre.steps,
            neighbours_drawn=series.num_drawn,
            neighbours_rejected=series.num_rejected,
            images=records,
        )
        self.state.patients[request.task] = self.writer.write_patient(record, images)
        self.progress(len(images))


def _class_summaries(job: SynthesisJob, state: JournalState) -> list[ClassSummary]:
    """Per target class, from the journal (so resumed runs count their earlier work)."""
    summaries = {name: ClassSummary(target_class=name) for name in job.plan.target_weights}
    steps: dict[str, int] = {}
    for p in state.patients.values():
        if p.target_class is None:
            continue
        s = summaries.setdefault(p.target_class, ClassSummary(target_class=p.target_class))
        s.patients += 1
        s.images += len(p.images)
        s.images_labelled_with_target += sum(
            p.target_class in im.finding_labels.split("|") for im in p.images
        )
        s.converged += 1
        s.neighbours_drawn += p.neighbours_drawn
        s.neighbours_rejected += p.neighbours_rejected
        steps[p.target_class] = steps.get(p.target_class, 0) + p.steps
    for event in state.events:
        s = summaries.setdefault(
            event["target_class"], ClassSummary(target_class=event["target_class"])
        )
        if event["event"] == "gave_up":
            if event["reason"] == "plateau":
                s.gave_up_plateau += 1
            else:
                s.gave_up_step_limit += 1
        elif event["event"] == "sampling_failure":
            s.converged += 1
            s.sampling_failures += 1
            s.neighbours_drawn += int(event.get("drawn", 0))
            s.neighbours_rejected += int(event.get("rejected", 0))
            steps[s.target_class] = steps.get(s.target_class, 0) + int(event.get("steps", 0))
        elif event["event"] == "abandoned":
            s.abandoned_patients += 1
    for s in summaries.values():
        s.starts = s.converged + s.gave_up_plateau + s.gave_up_step_limit
        s.give_up_rate = None if s.starts == 0 else (s.starts - s.converged) / s.starts
        s.mean_steps_to_converge = (
            steps.get(s.target_class, 0) / s.converged if s.converged else None
        )
    return [summaries[name] for name in sorted(summaries)]


def prevalence_report(job: SynthesisJob, state: JournalState) -> dict:
    """``prevalence.json``: labels target vs planned vs achieved, exclusivity, severities."""
    plan, written = job.plan, [state.patients[pid] for pid in sorted(state.patients)]
    labels = plan.annotated_labels
    rows = prevalence_rows(
        labels,
        [(p.target_labels or [p.target_class or ""], [im.finding_labels for im in p.images])
         for p in written],
        [(p.target_labels or [p.target_class or ""], p.num_images) for p in plan.patients],
        plan.target_prevalence, seed=plan.seed,
    )  # fmt: skip
    nf_images = sum(
        NO_FINDING in im.finding_labels.split("|") and im.finding_labels != NO_FINDING
        for p in written for im in p.images
    )  # fmt: skip
    nf_patients = sum(
        (p.target_labels or [p.target_class or ""]) == [NO_FINDING]
        and any(im.finding_labels != NO_FINDING for im in p.images)
        for p in written
    )  # fmt: skip
    off_target = sum(
        p.target_labels is not None
        and any(set(im.finding_labels.split("|")) != set(p.target_labels) for im in p.images)
        for p in written
    )  # fmt: skip
    cfg = job.options.optimisation
    drawn_all = [s for p in plan.patients for s in _planned_severities(job, p)]
    return {
        "unit": "images; CI: 95% percentile bootstrap over patients",
        "target": "the site's prevalence (generator manifest)" if plan.target_prevalence else None,
        "target_note": plan.target_note,
        "labels": rows,
        "no_finding_images_with_a_finding": int(nf_images),
        "no_finding_patients_with_a_finding": int(nf_patients),
        "patients_off_target_vector": int(off_target),
        "patients_written": len(written),
        "patients_abandoned": len(state.abandoned),
        "patients_with_redrawn_severity": sum(
            (job.options.redraw_severity and p.attempt > 0)
            or p.attempt >= job.options.severity_kept_attempts
            for p in written
        ),
        "severity": severity_summary(
            drawn_all,
            [s for p in written for s in p.severity_logit.values()],
            [s for p in written for s in p.centre_minus_youden_logit.values()],
            cfg.severity_mean_logit,
            cfg.severity_std_logit,
        ),
    }


def _planned_severities(job: SynthesisJob, patient: PlannedPatient) -> list[float]:
    """The severity jitter a planned patient's first start draws (one per callable positive)."""
    labels = patient.target_labels or [patient.target_class or ""]
    count = sum(
        n in job.class_names and job.youden[job.class_names.index(n)] is not None for n in labels
    )
    jitter = severity_jitter(job.plan.seed, patient.patient_id, count, job.options.optimisation)
    return [float(j) for j in jitter]
