package twilio

// URLVariants exposes the URL forms the verifier signs over, for the fuzz
// test's reference signer.
var URLVariants = urlVariants
