"""Meta-reinforcement learning (SIMOL Figure 3): a Gaussian MLP policy as a pure function of its parameters
(``policy``), batched rollouts of MuJoCo environments (``sampler``), the linear feature baseline (``baseline``)
and MAML with vanilla policy gradient (``maml_vpg``). The runner is ``taskbal.runners.meta_rl``."""
