from twisted.trial import util

util.DEFAULT_TIMEOUT_DURATION = 20
