"""The serving contract: the signature a client calls and the outputs it returns.

`probability` is what `rank` sorts by; a model with the pick head (`deepfm_model.model`) also returns `pick` and
`like`. The export writes them, the server and the client name them from here.
"""

SIGNATURE_KEY = "serving_default"  # TF Serving's default signature: what a Predict without a name calls
PROBABILITY = "probability"
PICK = "pick"
LIKE = "like"
