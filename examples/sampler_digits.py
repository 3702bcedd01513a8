"""GANOverSampler in a notebook-style run: sklearn's 8x8 digits with two classes cut down.

Run: .venv/bin/python examples/sampler_digits.py   (CPU, well under a minute)

Digits 1 and 7 keep 8 training images each, the other digits about 90. A logistic regression
is trained three ways, as in the service's report: on the data as it is, after plain random
oversampling, and after GAN oversampling; the per-class recall on the untouched test half
shows what the GAN images did. The figures are whatever this run gives (one seed, a short
GAN budget): they are not a benchmark.
"""

# %% Imports
from collections import Counter

import numpy as np
import torch
from imblearn.over_sampling import RandomOverSampler
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.model_selection import train_test_split

from balancer import GANOverSampler

# The GANs here are tiny: a second CPU thread buys little, and when other programs keep the
# cores busy the threads wait on each other (several times slower on a shared 2-core machine).
torch.set_num_threads(1)

# %% Data: half of the digits for training, with 1 and 7 cut to 8 images each
CUT = {1: 8, 7: 8}  # class -> training images kept

digits = load_digits()  # 1,797 images, 8x8, values 0..16 (float64 rows of 64 features)
X_train, X_test, y_train, y_test = train_test_split(
    digits.data, digits.target, test_size=0.5, stratify=digits.target, random_state=0
)
keep = np.concatenate(
    [np.flatnonzero(y_train == c)[: CUT.get(c, len(y_train))] for c in np.unique(y_train)]
)
X_train, y_train = X_train[keep], y_train[keep]
print("training images per class:", dict(sorted(Counter(y_train.tolist()).items())))

# %% Balance the two cut classes with GAN images (the flat 64-feature rows are read as 8x8)
largest = max(Counter(y_train.tolist()).values())
strategy = {c: largest for c in CUT}  # the cut classes up to the largest class's count
sampler = GANOverSampler(
    sampling_strategy=strategy,
    gan_iterations=300,  # short: the CPU budget of this example
    device="auto",
    random_state=0,
)
X_gan, y_gan = sampler.fit_resample(X_train, y_train)
print("after GANOverSampler:    ", dict(sorted(Counter(y_gan.tolist()).items())))
print(f"(the GANs worked at {sampler.working_size_}x{sampler.working_size_} px; rows back at 8x8)")

# %% The same classifier three ways. In a model, put the sampler in an imblearn Pipeline:
# make_pipeline(GANOverSampler(...), LogisticRegression()) resamples in fit only.
training_sets = {
    "as is": (X_train, y_train),
    "random oversampling": RandomOverSampler(
        sampling_strategy=strategy, random_state=0
    ).fit_resample(X_train, y_train),
    "GAN oversampling": (X_gan, y_gan),
}
recalls = {}
for name, (X_fit, y_fit) in training_sets.items():
    model = LogisticRegression(max_iter=5000).fit(X_fit, y_fit)
    recalls[name] = recall_score(y_test, model.predict(X_test), average=None)

print("\ntest recall per class")
print(f"{'class':>5}  " + "  ".join(f"{name:>19}" for name in recalls))
for c in np.unique(y_test):
    mark = "  <- cut" if c in CUT else ""
    print(f"{c:>5}  " + "  ".join(f"{r[c]:>19.3f}" for r in recalls.values()) + mark)
print(f"{'mean':>5}  " + "  ".join(f"{r.mean():>19.3f}" for r in recalls.values()))
