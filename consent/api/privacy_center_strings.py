"""The privacy center's words, one catalog per language; the language comes from Accept-Language."""

from __future__ import annotations

ENGLISH = {
    "lang": "en",
    "title": "Your privacy choices",
    "intro": "Here you decide what we and our partners may do with your data. Changes apply at once.",
    "gpc": "Your browser sent a Global Privacy Control signal: we have recorded it as your opt-out of sale "
           "and sharing, and we honour it.",
    "opted_out": "You have opted out of the sale and sharing of your data.",
    "saved": "Your choices were saved.",
    "nothing_changed": "Nothing was changed.",
    "legal_basis.consent": "We only do this with your consent.",
    "legal_basis.legitimate_interest": "We do this because of a legitimate interest; you may object.",
    "legal_basis.contract": "We need this to provide the service you asked for.",
    "legal_basis.legal_obligation": "The law requires us to do this.",
    "retention": "Kept for {duration}.",
    "sale": "This involves selling or sharing your data.",
    "first_party": "us ({controller})",
    "partner_uses": "{partner} would use: {scopes}",
    "sensitivity.low": "low sensitivity", "sensitivity.medium": "medium sensitivity",
    "sensitivity.high": "high sensitivity",
    "allow": "Allow {who} to use my data for {purpose}",
    "object": "I object to {purpose}",
    "state.granted": "Allowed", "state.granted_until": "Allowed until {date}",
    "state.withdrawn": "Withdrawn", "state.expired": "Expired", "state.objected": "You objected",
    "state.reconsent": "Needs your consent again: the purpose has changed", "state.none": "Not allowed",
    "state.not_objected": "You have not objected",
    "information_only": "No choice to make here: this is for your information.",
    "save": "Save my choices",
    "history": "What happened", "no_history": "Nothing yet.",
    "receipt": "Download the signed receipt",
    "event.subject.granted": "You allowed {who} to use your data for {purpose}.",
    "event.subject.withdrawn": "You withdrew {who}'s permission for {purpose}.",
    "event.subject.expired": "{who}'s permission for {purpose} expired.",
    "event.subject.objected": "You objected to {purpose} by {who}.",
    "event.subject.global_opt_out": "Your opt-out of sale and sharing was recorded.",
    "event.subject.erased": "Your data was erased.",
    "export": "Download all my data (JSON)",
    "erase": "Erase my data",
    "erase_title": "Erase your data for good?",
    "erase_text": "Your choices and their history will be erased and cannot be recovered. Partners will no "
                  "longer be allowed to use your data. This ends your session.",
    "erase_confirm": "Yes, erase my data",
    "erase_cancel": "No, go back",
    "erased": "Your data has been erased.",
    "logout": "Sign out",
    "signed_out": "You are signed out. To come back, open the privacy center from the platform again.",
    "expired_link": "This link can no longer be used. Open the privacy center again from the platform.",
    "no_session": "Your session has ended. Open the privacy center again from the platform.",
    "forbidden": "This form has expired. Reload the page and try again.",
    "error": "Something went wrong, and nothing was changed. Please try again.",
    "units": {"Y": ("year", "years"), "M": ("month", "months"), "W": ("week", "weeks"), "D": ("day", "days"),
              "H": ("hour", "hours"), "MIN": ("minute", "minutes"), "S": ("second", "seconds")},
    "and": "and",
}

FRENCH = {
    "lang": "fr",
    "title": "Vos choix de confidentialité",
    "intro": "Ici, vous décidez de ce que nous et nos partenaires pouvons faire de vos données. Les "
             "changements s'appliquent aussitôt.",
    "gpc": "Votre navigateur a envoyé un signal Global Privacy Control : nous l'avons enregistré comme votre "
           "refus de la vente et du partage de vos données, et nous le respectons.",
    "opted_out": "Vous avez refusé la vente et le partage de vos données.",
    "saved": "Vos choix ont été enregistrés.",
    "nothing_changed": "Rien n'a été modifié.",
    "legal_basis.consent": "Nous ne le faisons qu'avec votre consentement.",
    "legal_basis.legitimate_interest": "Nous le faisons au titre d'un intérêt légitime ; vous pouvez vous y "
                                       "opposer.",
    "legal_basis.contract": "C'est nécessaire pour fournir le service que vous avez demandé.",
    "legal_basis.legal_obligation": "La loi nous y oblige.",
    "retention": "Conservé {duration}.",
    "sale": "Cela implique la vente ou le partage de vos données.",
    "first_party": "nous ({controller})",
    "partner_uses": "{partner} utiliserait : {scopes}",
    "sensitivity.low": "sensibilité faible", "sensitivity.medium": "sensibilité moyenne",
    "sensitivity.high": "sensibilité élevée",
    "allow": "Autoriser {who} à utiliser mes données pour {purpose}",
    "object": "Je m'oppose à {purpose}",
    "state.granted": "Autorisé", "state.granted_until": "Autorisé jusqu'au {date}",
    "state.withdrawn": "Retiré", "state.expired": "Expiré", "state.objected": "Vous vous y êtes opposé",
    "state.reconsent": "Votre accord est de nouveau nécessaire : la finalité a changé",
    "state.none": "Non autorisé", "state.not_objected": "Vous ne vous y êtes pas opposé",
    "information_only": "Aucun choix à faire ici : ceci est pour votre information.",
    "save": "Enregistrer mes choix",
    "history": "Ce qui s'est passé", "no_history": "Rien pour l'instant.",
    "receipt": "Télécharger le reçu signé",
    "event.subject.granted": "Vous avez autorisé {who} à utiliser vos données pour {purpose}.",
    "event.subject.withdrawn": "Vous avez retiré à {who} l'autorisation pour {purpose}.",
    "event.subject.expired": "L'autorisation de {who} pour {purpose} a expiré.",
    "event.subject.objected": "Vous vous êtes opposé à {purpose} par {who}.",
    "event.subject.global_opt_out": "Votre refus de la vente et du partage a été enregistré.",
    "event.subject.erased": "Vos données ont été effacées.",
    "export": "Télécharger toutes mes données (JSON)",
    "erase": "Effacer mes données",
    "erase_title": "Effacer vos données définitivement ?",
    "erase_text": "Vos choix et leur historique seront effacés sans retour possible. Les partenaires ne "
                  "pourront plus utiliser vos données. Votre session prendra fin.",
    "erase_confirm": "Oui, effacer mes données",
    "erase_cancel": "Non, revenir",
    "erased": "Vos données ont été effacées.",
    "logout": "Se déconnecter",
    "signed_out": "Vous êtes déconnecté. Pour revenir, ouvrez de nouveau l'espace de confidentialité depuis "
                  "la plateforme.",
    "expired_link": "Ce lien n'est plus utilisable. Ouvrez de nouveau l'espace de confidentialité depuis la "
                    "plateforme.",
    "no_session": "Votre session a pris fin. Ouvrez de nouveau l'espace de confidentialité depuis la "
                  "plateforme.",
    "forbidden": "Ce formulaire a expiré. Rechargez la page et réessayez.",
    "error": "Une erreur est survenue et rien n'a été modifié. Veuillez réessayer.",
    "units": {"Y": ("an", "ans"), "M": ("mois", "mois"), "W": ("semaine", "semaines"), "D": ("jour", "jours"),
              "H": ("heure", "heures"), "MIN": ("minute", "minutes"), "S": ("seconde", "secondes")},
    "and": "et",
}

CATALOGS = {"en": ENGLISH, "fr": FRENCH}


def language(accept_language: str | None) -> dict:
    """The catalog of the first language the browser accepts that we have (by q-value); English otherwise."""
    choices = []
    for n, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        choices.append((-quality, n, tag.strip().lower().split("-")[0]))
    for _, _, tag in sorted(choices):
        if tag in CATALOGS:
            return CATALOGS[tag]
    return ENGLISH
