"""The DQN agent: networks, replay memory and the learning algorithm."""
