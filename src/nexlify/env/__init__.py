"""Trading environments: the accounting, one Gymnasium env, and N envs stepped as arrays.

Importing this package registers ``Nexlify/Trading-v0`` with Gymnasium.
"""

import gymnasium as gym

if "Nexlify/Trading-v0" not in gym.registry:
    gym.register(id="Nexlify/Trading-v0", entry_point="nexlify.env.trading:TradingEnvironment")
