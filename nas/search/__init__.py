"""edgetpu_models.nas.search: accelerator-aware architecture search (space, controllers, rewards, proxy training,
trial log, results, and the search loop). Importing it does not import TensorFlow."""
