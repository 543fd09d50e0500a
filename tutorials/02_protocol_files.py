# %% [markdown]
# # 02 · Protocol files: describing an experiment in TOML
#
# **Question.** How do I describe *my* virtual experiment — which rules, which networks, how many seeds,
# which rig — and how do I know the file means what I think it means?
#
# **Time.** About 5 seconds on a 2-core laptop CPU (measured 3 s) (a few seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`).
#
# A protocol is a TOML file with one table per stage: `[task]`, `[network]`, `[training]`, `[sweep]`,
# optional `[rules.<name>]` overrides, one `[[rig]]` table per rig setting, and `[decoder]`. Every key has
# a default, so a protocol only says what differs. `protocols/quickstart.toml` comments every parameter
# with its meaning and unit.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import OUTPUT, REPO, TINY
from virtual_lab.protocol import ProtocolError, load_protocol, parse_protocol

quickstart = load_protocol(REPO / "protocols" / "quickstart.toml")
print(quickstart.sweep)
print(quickstart.rig[1])

# %% [markdown]
# ## A protocol of your own
#
# The sweep crosses rules x learning-rate scales x seeds. Each run's seed is derived from the protocol's
# master `seed`, the rule, the learning-rate scale and the replicate, and stored in its session, so any
# single run can be reproduced. Here: two rules, two learning rates, a smaller network.

# %%
text = f"""
name = "my-experiment"
output_dir = "{(OUTPUT / 'recordings').as_posix()}"
seed = 11

[network]
hidden_sizes = [{16 if TINY else 64}]

[training]
n_epochs = {2 if TINY else 10}
n_checkpoints = {4 if TINY else 11}

[sweep]
rules = ["sgdm", "fa"]           # aliases: fa = feedback_alignment, ia = information_alignment
learning_rate_scales = [0.5, 2.0]
n_seeds = {2 if TINY else 6}

[rules.sgdm]
learning_rate = 0.05             # base learning rate, scaled by learning_rate_scales

[[rig]]
name = "200-units-noisy"
unit_fraction = 0.5
noise_sd = 0.3
noise_relative = true
"""
path = OUTPUT / "my_experiment.toml"
path.write_text(text)
protocol = load_protocol(path)
print(protocol.sweep.rules, protocol.rules["sgdm"].learning_rate)

# %% [markdown]
# ## What runs will this protocol train?

# %%
from virtual_lab.sweeps.expand import expand_sweep

specs = expand_sweep(protocol, n_features=64, n_classes=10)
for s in specs[:4]:
    print(s.rule, s.learning_rate, s.seed, s.run_id)
print(len(specs), "runs")

fig, ax = plt.subplots(figsize=(4, 2.5))
ax.scatter([s.learning_rate for s in specs], [s.rule for s in specs])
ax.set_xscale("log")
ax.set_xlabel("learning rate")
ax.set_title("the sweep", fontsize=9)
fig.tight_layout()
fig.savefig(OUTPUT / "02_sweep.png", dpi=100)

# %% [markdown]
# ## Mistakes are caught before anything runs
#
# An unknown key, a wrong type or an out-of-range value stops with one line naming the file, the dotted
# key, what was given, what is allowed and the closest valid key.

# %%
for bad in ({"trainng": {"n_epochs": 3}}, {"training": {"n_epochs": "ten"}},
            {"sweep": {"rules": ["feedback_alignmnt"]}}, {"rig": [{"unit_fraction": 2}]}):
    try:
        parse_protocol(bad, "my_experiment.toml")
    except ProtocolError as err:
        print(err)

# %% [markdown]
# Run it with `virtual-lab run my_experiment.toml`, or in Python with
# `virtual_lab.pipeline.run_protocol(protocol)`.
