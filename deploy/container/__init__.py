"""What runs inside the brokerstack image besides the app itself: healthchecks, beat's scheduler
with a liveness mark, and Flower's launcher. Copied into the image as ``deploy.container``."""
