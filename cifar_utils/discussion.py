"""The report's discussions: the prose at the end of notebooks 03, 04 and 05, every number in it read
from the runs it discusses, so the text always describes the saved outputs.

Usage (as the notebooks call it)::

    from cifar_utils import discussion, report
    print(discussion.discuss_training(report.read_run("runs/report-full/03_train")))
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from .device import recorded_device

if TYPE_CHECKING:  # annotations only: report imports this module
    from .evaluation import Evaluation
    from .report import BranchWeightSummary, RunRecord


def count(number: int, noun: str) -> str:
    """'1 epoch', '10 epochs', '45,000 images': a number with its noun, plural unless it is one."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def final_evaluation_note(metrics: dict) -> str:
    """How a run's final test and validation accuracies were measured, for labels: the per-epoch validation
    numbers in ``history.csv`` never use test-time augmentation, the final evaluation uses the run's ``tta``."""
    return tta_note(_final_tta(metrics))


def tta_note(tta: str) -> str:
    """'with test-time augmentation (flip)', or 'without test-time augmentation' for ``tta`` 'none'."""
    return "without test-time augmentation" if tta == "none" else f"with test-time augmentation ({tta})"


def _final_tta(metrics: dict) -> str:
    return metrics.get("config", {}).get("tta", "none")


def summarize_run(metrics: Mapping[str, Any], data_note: str, smoke: bool = False) -> str:
    """One sentence on a finished run from its metrics.json: what trained, how long, and its final test and
    validation accuracy; ``data_note`` names the data copy (:func:`cifar_utils.report.data_copy_note`)."""
    sizes = metrics["split_sizes"]
    validation = (f" and {metrics['validation_accuracy']:.2%} final validation accuracy, both"
                  if metrics.get("validation_accuracy") is not None else ",")
    text = (f"The {metrics['preset']} preset, trained for {count(metrics['epochs'], 'epoch')} on "
            f"{count(sizes['train'], 'image')} in {metrics['train_seconds']:.0f} s on {recorded_device(metrics)}, reached "
            f"{metrics['test_accuracy']:.2%} test accuracy on {count(sizes['test'], 'test image')}{validation} "
            f"{final_evaluation_note(metrics)}; measured on {data_note}.")
    return text + (" This is a smoke run: the numbers only show that the pipeline works." if smoke else "")


def discuss_training(record: RunRecord, smoke: bool = False) -> str:
    """A discussion of a finished run, every number read from its history and metrics: the train-validation
    gap (overfitting), where validation loss bottomed out, and how well validation predicted test."""
    history, metrics = record.history, record.metrics
    last = history[-1]
    if math.isnan(last["val_acc"]):  # validation_split=0: nothing to compare training accuracy with
        text = [f"After {count(last['epoch'], 'epoch')} training accuracy is {last['train_acc']:.1%}. The run held out no "
                "validation images, so the curves cannot show overfitting; only the final test accuracy "
                f"({metrics['test_accuracy']:.2%}, {final_evaluation_note(metrics)}) measures the result."]
    else:
        text = _validated_training(history, metrics)
    if smoke:
        text.insert(0, "This is a smoke run (a few hundred images, one epoch): the sentences below describe it "
                       "faithfully, but it says nothing about the method.")
    return " ".join(text)


def _validated_training(history: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[str]:
    """:func:`discuss_training`'s sentences for a run with a validation split."""
    last = history[-1]
    gap = last["train_acc"] - last["val_acc"]
    config = metrics.get("config", {})
    regularisers = [name for name, on in (("augmentation", config.get("augmentation", "none") != "none"),
                                          ("label smoothing", config.get("label_smoothing", 0) > 0),
                                          ("weight decay", config.get("weight_decay", 0) > 0)) if on]
    if gap < -0.02:
        fit = ("validation accuracy is well above training accuracy: training accuracy is measured "
               + ("on augmented images " if "augmentation" in regularisers else "")
               + "while the weights still change, so strong regularisation or a changing learning rate can hold "
               "it below; the network is not overfitting")
    elif gap < 0.02:
        fit = ("the two are close, so the network is not overfitting; training accuracy is measured "
               + ("on augmented images " if "augmentation" in regularisers else "")
               + "while the weights still change, which is why it can even sit below validation accuracy")
    elif gap < 0.08:
        fit = "a moderate gap: some overfitting" + (f", held in check by {join_words(regularisers)}" if regularisers else
                                                    ", with no augmentation, label smoothing or weight decay to hold it in check")
    else:
        fit = ("a large gap: the network memorises its training images; stronger augmentation, more weight decay "
               "or fewer epochs would narrow it")
    lowest = min(history, key=lambda row: row["val_loss"])
    if lowest["epoch"] == last["epoch"]:
        trend = ("validation loss was lowest at the last epoch: the gap had not yet cost validation loss, so more "
                 "epochs might still help")
    else:
        trend = (f"validation loss was lowest at epoch {lowest['epoch']} of {last['epoch']} ({lowest['val_loss']:.3f}) and "
                 f"ended at {last['val_loss']:.3f}: the later epochs fitted the training images more than the "
                 "validation ones")
    text = [f"After {count(last['epoch'], 'epoch')} training accuracy is {last['train_acc']:.1%} and validation accuracy "
            f"{last['val_acc']:.1%} ({gap * 100:+.1f} points): {fit}.", f"In the curves, {trend}."]
    if metrics.get("validation_accuracy") is not None:
        diff = metrics["test_accuracy"] - metrics["validation_accuracy"]
        agree = "so the validation split predicted the test result well" if abs(diff) < 0.01 else \
            "a difference of a point or more, so treat either as uncertain by about that much"
        relation = (f"{abs(diff) * 100:.2f} points {'above' if diff > 0 else 'below'}"
                    if round(abs(diff) * 100, 2) else "equal to")
        text.append(f"Test accuracy ({metrics['test_accuracy']:.2%}) is {relation} the final "
                    f"validation accuracy ({metrics['validation_accuracy']:.2%}), both measured "
                    f"{final_evaluation_note(metrics)}, {agree}.")
        if _final_tta(metrics) != "none":
            # The final evaluation scores the reported epoch's weights: the best one where the run keeps it.
            curve = max(row["val_acc"] for row in history) if config.get("keep_best") else last["val_acc"]
            change = metrics["validation_accuracy"] - curve
            text.append(f"The curves' per-epoch validation accuracies are measured without test-time augmentation: "
                        f"{curve:.2%} for the evaluated weights, {abs(change) * 100:.2f} points "
                        f"{'below' if change > 0 else 'above'} the final evaluation with it." if change else
                        f"The curves' per-epoch validation accuracies are measured without test-time augmentation; "
                        f"for the evaluated weights ({curve:.2%}) the final evaluation with it scores the same.")
    return text


def join_words(items: Sequence[str]) -> str:
    """'1', '1 and 2', '1, 2 and 3'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def discuss_evaluation(evaluation: Evaluation, branches: BranchWeightSummary, smoke: bool = False) -> str:
    """A discussion of a test evaluation: strongest and weakest class, the most frequent confusion and
    whether it goes both ways, and which branch each Block's gate prefers."""
    ranked = sorted(evaluation.per_class_accuracy.items(), key=lambda item: item[1])
    text = [f"Test accuracy is {evaluation.accuracy:.2%}. The weakest class is {ranked[0][0]} ({ranked[0][1]:.1%}), "
            f"the strongest {ranked[-1][0]} ({ranked[-1][1]:.1%})."]
    pairs = evaluation.most_confused(top=1)
    if pairs:
        true, predicted, count = pairs[0]
        i, j = evaluation.classes.index(true), evaluation.classes.index(predicted)
        back = int(evaluation.confusion[j, i])
        if back >= count / 2:
            way = "the two classes are confused both ways, as similar-looking classes are."
        elif back:
            way = f"{true} is taken for {predicted} {count / back:.1f} times as often as the reverse."
        else:
            way = "never the other way."
        text.append(f"The most frequent mistake is {true} predicted as {predicted} ({count} images), and "
                    f"{predicted} is taken for {true} {back} times: {way}")
    if branches.weights:
        preferred = branches.preferences()
        even = 1 / len(branches.branch_labels)
        per_block = ", ".join(f"Block {b + 1} {name} {share:.1%}" for b, (name, share) in enumerate(preferred))
        threshold = even + 0.05  # 5 points more than an even mix
        leaning: dict[str, list[str]] = {}  # branch -> the Blocks that give it more than the threshold
        for b, (name, share) in enumerate(preferred):
            if round(share, 3) > threshold:  # judged on the printed value, so the text never contradicts itself
                leaning.setdefault(name, []).append(str(b + 1))
        phrases = [(f"Blocks {join_words(blocks)} give" if len(blocks) > 1 else f"Block {blocks[0]} gives")
                   + f" {name} more than {threshold:.1%}" for name, blocks in sorted(leaning.items())]
        lean = ("; ".join(phrases) or f"No Block gives its favourite branch more than {threshold:.1%}") + \
            f" (an even mix gives each branch {even:.1%})"
        text.append(f"Each Block's favoured branch (its mean weight over the test images): {per_block}. {lean}. "
                    f"Overall, {branches.describe('the Blocks')}.")
    if smoke:
        text.insert(0, "This is a smoke run: the numbers describe it faithfully but say nothing about the method.")
    return " ".join(text)


def discuss_lr_comparison(summary: Sequence[Mapping[str, Any]], chosen: float, smoke: bool = False,
                          histories: Optional[Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]] = None) -> str:
    """A discussion of a learning-rate comparison (:func:`cifar_utils.sweep.summarize_by_learning_rate`
    rows): the rate chosen on validation, whether its lead is larger than the spread between seeds, the
    runs that failed, and whether the nearest rates on either side did clearly worse, which brackets the best
    rate (:func:`_where_the_best_rate_lies`); with the runs' ``histories``
    (as :func:`cifar_utils.sweep.sweep_histories` gives them), also how the curves got there."""
    from .sweep import passed_over  # local import: sweep builds on report, which imports this module

    tried = sorted(summary, key=lambda row: row["learning_rate"])
    best = next(row for row in tried if row["learning_rate"] == chosen)

    def spread(row: Mapping[str, Any], key: str) -> str:
        return f" ± {row[key + '_std']:.2%}" if not math.isnan(row[key + "_std"]) else ""

    text = [f"Chosen on mean validation accuracy, lr {chosen:g} reaches {best['val_acc_mean']:.2%}"
            f"{spread(best, 'val_acc')} validation and {best['test_acc_mean']:.2%}{spread(best, 'test_acc')} test "
            f"accuracy over {count(best['runs'], 'seed')}."]
    failures = [f"lr {row['learning_rate']:g} on {row['failed']} of {row['runs'] + row['failed']} seeds"
                for row in tried if row["failed"]]
    if failures:
        text.append(f"Runs failed for {join_words(failures)} (the table's status column says why); the means leave "
                    "them out.")
    others = [row for row in tried if row is not best]
    finished = [row for row in others if not math.isnan(row["val_acc_mean"])]
    skipped = passed_over(tried, chosen)
    if skipped:  # sweep.chosen_learning_rate takes no rate that failed on some seeds
        names = join_words([f"lr {row['learning_rate']:g}" for row in skipped])
        text.append(f"{names} reached a higher mean validation accuracy over the seeds that finished, but a rate "
                    "that fails on some seeds is not chosen.")
    # The runner-up comes from the rates the choice could take, so that the lead below is never negative.
    eligible = [row for row in finished if not row["failed"]] if not best["failed"] else finished
    if eligible:
        runner_up = max(eligible, key=lambda row: row["val_acc_mean"])
        lead, noise = _lead_and_noise(best, runner_up)
        if math.isnan(noise):
            verdict = f"with {_no_noise_measure(best, runner_up)} there is no measure of noise to compare it with"
        elif lead > 2 * noise:
            verdict = (f"more than twice the larger seed-to-seed standard deviation ({noise * 100:.2f} points), so "
                       "the ranking is unlikely to be seed-to-seed noise (a rough test with this few seeds)")
        else:
            verdict = (f"within twice the seed-to-seed standard deviation ({noise * 100:.2f} points), so these two "
                       "rates are not clearly different")
        text.append(f"Its lead over lr {runner_up['learning_rate']:g} is {lead * 100:.2f} points of final validation "
                    f"accuracy: {verdict}.")
    else:
        runner_up = None
    if others:
        text.append(_where_the_best_rate_lies(best, others, runner_up))
    if histories:
        text += _discuss_lr_curves(histories, chosen)
    if smoke:
        text.insert(0, "This is a smoke run: the numbers describe it faithfully but say nothing about the method.")
    return " ".join(text)


def _lead_and_noise(best: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[float, float]:
    """How far ``row``'s mean validation accuracy trails ``best``'s, and the larger of their seed-to-seed
    standard deviations (NaN with one seed per rate, or where every seed scored alike: no measure of noise)."""
    noise = max((r["val_acc_std"] for r in (best, row) if not math.isnan(r["val_acc_std"])), default=math.nan)
    return best["val_acc_mean"] - row["val_acc_mean"], noise if noise > 0 else math.nan


def _no_noise_measure(best: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    """Why two rates give no seed-to-seed spread (:func:`_lead_and_noise` NaN): one seed each, or seeds that
    scored exactly alike (tiny validation sets)."""
    return ("one seed per rate" if all(math.isnan(r["val_acc_std"]) for r in (best, row))
            else "seeds that scored exactly alike")


def _where_the_best_rate_lies(best: Mapping[str, Any], others: Sequence[Mapping[str, Any]],
                              runner_up: Optional[Mapping[str, Any]] = None) -> str:
    """Whether the nearest rate tried on each side of the chosen one did clearly worse: a rate whose runs all
    failed did; a finished one did when it trails by more than twice the larger seed-to-seed standard
    deviation of the two (with one seed per rate there is no such measure, so it did not clearly). Only then
    is the best rate bracketed.
    The ``runner_up``, whose margin the sentence before gave, is named without repeating it."""
    if all(row["val_acc_mean"] == best["val_acc_mean"] for row in others):
        return ("Every other rate reached the same mean validation accuracy, so this comparison does not single "
                "out a rate.")
    chosen = best["learning_rate"]

    def verdict(row: Mapping[str, Any]) -> str:
        if math.isnan(row["val_acc_mean"]):
            return "worse"
        lead, noise = _lead_and_noise(best, row)
        if lead <= 0:
            return f"lr {row['learning_rate']:g} did as well or better"
        if math.isnan(noise):
            return (f"lr {row['learning_rate']:g} trails by {lead * 100:.2f} points, which "
                    f"{_no_noise_measure(best, row)} cannot tell from noise")
        if lead > 2 * noise:
            return "worse"
        if row is runner_up:
            return f"lr {row['learning_rate']:g} is not clearly worse"
        return f"lr {row['learning_rate']:g} is within twice the seed-to-seed spread of lr {chosen:g}"

    open_sides, neighbours = [], []
    for side, rows in (("smaller", [r for r in others if r["learning_rate"] < chosen]),
                       ("larger", [r for r in others if r["learning_rate"] > chosen])):
        nearest = min(rows, key=lambda r: abs(r["learning_rate"] - chosen), default=None)
        why = f"no {side} rate was tried" if nearest is None else verdict(nearest)
        neighbours.append(nearest)
        if why != "worse":
            open_sides.append(f"{why}, so a {side} rate might do as well or better")
    if not open_sides:
        # "by the spread" only where both neighbours finished, so were compared with it (not failed outright)
        compared = all(not math.isnan(row["val_acc_mean"]) for row in neighbours)
        by = ", by more than twice the seed-to-seed spread" if compared else ""
        return (f"The nearest smaller and larger rates both did worse than lr {chosen:g}{by}, so the best "
                "rate lies inside the range tried.")
    return f"On where the best rate lies: {'; '.join(open_sides)}."


def _discuss_lr_curves(histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], chosen: float) -> list[str]:
    """Sentences on the mean validation curves: where each other rate trailed the chosen one most, where it
    ended, and the epochs at which a rate's mean validation loss rose (after the warm-up, a possible sign of
    too large a rate)."""
    from .plots import mean_curve  # the curves the notebook plots, so text and figure agree

    # (rate, label, runs) by rate, for the rates whose runs validated; sweep_histories labels them "lr=<rate>",
    # so the chosen rate is found by that same formatting
    rates = sorted(((float(label.split("=", 1)[1]), label, runs) for label, runs in histories.items()
                    if all(math.isfinite(float(row["val_acc"])) for history in runs for row in history)),
                   key=lambda item: item[0])
    chosen_runs = next((runs for _, label, runs in rates if label == f"lr={chosen:g}"), None)
    if chosen_runs is None:
        return []
    best = dict(zip(*mean_curve(chosen_runs, "val_acc")))  # epoch -> mean validation accuracy
    clauses = []
    for lr, _, runs in rates:
        if runs is chosen_runs:
            continue
        curve = dict(zip(*mean_curve(runs, "val_acc")))
        gaps = {epoch: best[epoch] - curve[epoch] for epoch in curve if epoch in best}
        if not gaps:
            continue
        worst = max(gaps, key=gaps.get)
        end = gaps[max(gaps)]
        ending = f"ends {abs(end) * 100:.2f} points {'behind' if end >= 0 else 'ahead'}"
        if gaps[worst] > 0:
            clauses.append(f"lr {lr:g} trails lr {chosen:g} by up to {gaps[worst] * 100:.2f} points of mean "
                           f"validation accuracy (epoch {worst:g}: {curve[worst]:.2%} against {best[worst]:.2%}) "
                           f"and {ending}")
        else:
            clauses.append(f"lr {lr:g} never trails lr {chosen:g} and {ending}")
    text = [f"Along the way (the per-epoch curves, without test-time augmentation), {'; '.join(clauses)}."] \
        if clauses else []
    noisy, warming = [], []
    for lr, _, runs in rates:
        epochs, loss = mean_curve(runs, "val_loss")
        rates_at_start = mean_curve(runs, "lr")[1]  # each epoch's learning rate as it began
        rose = [e for e in range(1, len(loss)) if loss[e] > loss[e - 1]]
        # A rise in an epoch whose rate was still climbing (the warm-up) says little about the rate itself.
        climbing = [e for e in rose if e + 1 < len(rates_at_start) and rates_at_start[e + 1] > rates_at_start[e]]
        for group, chosen_epochs in ((noisy, [e for e in rose if e not in climbing]), (warming, climbing)):
            if chosen_epochs:
                group.append(f"lr {lr:g} at epoch{'s' if len(chosen_epochs) > 1 else ''} "
                             f"{join_words([f'{epochs[e]:g}' for e in chosen_epochs])}")
    if noisy:
        text.append(f"The mean validation loss rose from one epoch to the next for {'; '.join(noisy)}: too large a "
                    "rate can show this way, while a validation loss that falls every epoch is steady progress.")
    if warming:
        text.append(f"{'It also' if noisy else 'The mean validation loss'} rose for {'; '.join(warming)}, while the "
                    "learning rate was still climbing in its warm-up, where a rise says little about the rate.")
    if not noisy and not warming and any(len(mean_curve(runs, "val_loss")[0]) > 1 for _, _, runs in rates):
        text.append("The mean validation loss fell at every epoch for every rate.")
    return text
