"""metabench: meta-learning problems as Gymnasium environments whose reward is minus the query loss.

Importing the package registers its environments with Gymnasium::

    import gymnasium as gym
    import metabench  # noqa: F401  (registers MetaOmniglot-*, MetaSinusoid-*)

    env = gym.make("MetaOmniglot-20w1s")
"""

from metabench import envs
from metabench.envs import ENV_IDS

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "envs", "__version__"]
