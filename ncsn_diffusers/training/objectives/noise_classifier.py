"""The noise-conditional classifier's objective: cross-entropy on images perturbed as the score model's were."""

from ...hub.upload import SINGLE_MODEL_FILES
from ..labels import load_training_labels
from ..noise_classifier import build_classifier, noise_classifier_losses, save_classifier
from ..noise_classifier_args import apply_score_model, check_noise_classifier_args, refuse_classifier_flags
from .score_matching import DenoisingScoreMatching


class NoiseClassification(DenoisingScoreMatching):
    """A noise-conditional classifier's cross-entropy -log p_phi(y | x + sigma z, sigma), sigma drawn as DSM draws it
    (Song et al., 2021, App. I); y is the label of each image (`labels.py`), logged beside the error rate."""

    name, logged_as = "noise_classifier", "error_rate"
    takes_recipe = False
    hub_files = SINGLE_MODEL_FILES

    @classmethod
    def adopt_settings(cls, config, explicit):
        apply_score_model(config, explicit)

    @classmethod
    def check_settings(cls, config, explicit):
        check_noise_classifier_args(config, explicit)

    @classmethod
    def refuse_settings(cls, config, explicit):
        refuse_classifier_flags(config, explicit)

    def build_network(self, args, images):
        self.labels, class_names = load_training_labels(args)
        if len(self.labels) != len(images):
            raise ValueError(
                f"{len(images)} training images but {len(self.labels)} labels: --objective noise_classifier needs "
                "every image readable (one was skipped, see the warning); remove or fix the unreadable files."
            )
        return build_classifier(args, class_names)

    def use_batch_order(self, order, num_processes):
        self.order, self.num_processes = order, num_processes

    def losses(self, classifier, clean, noise, levels, micro_step, process_index=0):
        index = self.order.indices(micro_step, process_index, self.num_processes)
        sigma = levels if levels.is_floating_point() else self.ladder(clean.device)[levels]
        return noise_classifier_losses(classifier, clean, self.labels[index].to(clean.device), sigma, noise)

    def save(self, args, accelerator, model, images, max_train_steps, train_time, last, repo_id):
        save_classifier(args, model, len(images), max_train_steps, train_time, last)
