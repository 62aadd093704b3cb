"""Weight sharing: ``training`` trains one supernet over a space (here or on Ray, ``ray_train``); the
search then scores sub-networks with its inherited weights."""
