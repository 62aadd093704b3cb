"""After a search: ``retrain`` the front with the final budget, ``distill`` it from a ``teacher``, and
``pick`` one model of the front."""
