//! Templates on the controller: create, add versions to, read, count the
//! users of and delete [`Template`]s, and create instances from them.
//!
//! Consistency between templates and the instances that use them rests on
//! one rule: an instance created from a version is stored in a transaction
//! that also checks the template's revision ([`TemplateCheck`], an
//! admission every controller has), and a delete first marks the versions
//! it deletes (a write, so the revision moves), then counts their users in
//! the store. Either the create commits first, and the count sees it, or
//! the mark does, and the create's check fails and its retry finds the
//! version being deleted. Usage is always counted from the instances'
//! records ([`TemplateInfo::count`]), so there is no counter to drift.

use async_trait::async_trait;

use super::admission::{Admission, StoreView};
use super::Controller;
use crate::model::{
    CreateInstance, FromTemplate, Instance, Template, TemplateInfo, TemplateName, TemplateOrigin,
    TemplateSpec, TEMPLATES_PREFIX,
};
use crate::store::{
    decode, put_object, Precondition, Revision, StoreError, StoreExt, StoredObject, Txn,
};
use crate::{Error, Result};

impl Controller {
    /// Stores template `name` with `spec` as its version 1. Errors:
    /// `InvalidArgument` naming the field, `AlreadyExists`, the store's.
    /// Nothing is stored on error.
    pub async fn create_template(
        &self,
        name: &TemplateName,
        spec: TemplateSpec,
    ) -> Result<TemplateInfo> {
        spec.validate()?;
        let template = Template::new(name.clone(), spec, self.now());
        match self
            .inner
            .store
            .commit(put_object(Txn::new(), &template))
            .await
        {
            Ok(_) => self.template_info(name, None).await,
            Err(StoreError::Conflict { .. }) => Err(Error::AlreadyExists {
                what: format!("template `{name}`"),
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// Adds `spec` as the next version of template `name`; the versions it
    /// has stay as they are. Errors: `InvalidArgument` naming the field,
    /// `NotFound`, `Conflict` (kept changing), the store's.
    pub async fn update_template(
        &self,
        name: &TemplateName,
        spec: TemplateSpec,
    ) -> Result<TemplateInfo> {
        spec.validate()?;
        for _ in 0..self.options().max_conflict_retries {
            let mut template = self.read_template(name).await?;
            template.add_version(spec.clone(), self.now());
            match self
                .inner
                .store
                .commit(put_object(Txn::new(), &template))
                .await
            {
                Ok(_) => return self.template_info(name, None).await,
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("template", name))
    }

    /// Template `name` (only `version`, if given) with its users. Errors:
    /// `NotFound` (the template or the version).
    pub async fn get_template(
        &self,
        name: &TemplateName,
        version: Option<u32>,
    ) -> Result<TemplateInfo> {
        self.template_info(name, version).await
    }

    /// Every template in name order, with its users.
    pub async fn list_templates(&self) -> Result<Vec<TemplateInfo>> {
        let (templates, _) = self
            .inner
            .store
            .list_objects::<Template, _>(|_| true)
            .await?;
        let instances = self.template_users(None).await?;
        Ok(templates
            .into_iter()
            .map(|t| TemplateInfo::count(t, &instances))
            .collect())
    }

    /// Deletes version `version` of template `name`, or every version; a
    /// template without versions is gone. Errors: `NotFound`,
    /// `FailedPrecondition` (an instance uses a version: they are named;
    /// nothing is deleted), `Conflict`, the store's.
    pub async fn delete_template(&self, name: &TemplateName, version: Option<u32>) -> Result<()> {
        let doomed = |v: u32| version.is_none_or(|wanted| wanted == v);
        // Mark first: from here on no create from these versions can
        // commit, so the count below cannot miss one.
        let marked = self.mark_template(name, version, true).await?;
        let users: Vec<String> = self
            .template_users(Some(name))
            .await?
            .into_iter()
            .filter(|i| i.template.as_ref().is_some_and(|o| doomed(o.version)))
            .map(|i| match (&i.template, version) {
                (Some(origin), None) => format!("{} (version {})", i.name, origin.version),
                _ => i.name,
            })
            .collect();
        if !users.is_empty() {
            self.mark_template(name, version, false).await?;
            let which = match version {
                Some(v) => format!("template `{name}` version {v}"),
                None => format!("template `{name}`"),
            };
            return Err(Error::FailedPrecondition(format!(
                "{which} is in use by {}; delete them first",
                users.join(", ")
            )));
        }
        let mut left = marked;
        left.versions.retain(|v| !doomed(v.version));
        let txn = if left.versions.is_empty() {
            Txn::new().delete(
                Template::key_for(name),
                Precondition::Revision(left.revision),
            )
        } else {
            put_object(Txn::new(), &left)
        };
        match self.inner.store.commit(txn).await {
            Ok(_) => Ok(()),
            // Only another delete or an update moves a marked template:
            // the caller may ask again.
            Err(StoreError::Conflict { .. }) => Err(self.too_many_conflicts("template", name)),
            Err(other) => Err(other.into()),
        }
    }

    /// Creates an instance from a template version (see
    /// [`Controller::create_instance`]), recording the version in it.
    /// Errors: those of `create_instance`, `NotFound` (the template or the
    /// version), `FailedPrecondition` (the version is being deleted).
    pub async fn create_from_template(&self, request: FromTemplate) -> Result<Instance> {
        let (create, origin, revision) = self.resolve_template(&request).await?;
        // The create's check reads the template from the cache: let it
        // show at least what was read here.
        self.inner.cache.wait_for(revision).await?;
        self.create_instance_from(create, Some(origin), None).await
    }

    /// The instance create `request` makes of its template version, as
    /// [`Controller::create_from_template`] would store it, without storing
    /// anything: for a deployment that checks a create against its node's
    /// files first. Errors: as `create_from_template` before its store.
    pub async fn template_request(&self, request: &FromTemplate) -> Result<CreateInstance> {
        Ok(self.resolve_template(request).await?.0)
    }

    /// `request`'s instance create, the version it comes from and the
    /// template's revision as read.
    async fn resolve_template(
        &self,
        request: &FromTemplate,
    ) -> Result<(CreateInstance, TemplateOrigin, Revision)> {
        let name = &request.template.name;
        let template = self.read_template(name).await?;
        let version = template.resolve(request.template.version)?;
        let create = request.request(version)?;
        let origin = TemplateOrigin {
            name: name.clone(),
            version: version.version,
        };
        Ok((create, origin, template.revision))
    }

    /// Sets or clears the deleting mark of `version` (or every version) of
    /// template `name`; the template as stored after. Errors: `NotFound`.
    async fn mark_template(
        &self,
        name: &TemplateName,
        version: Option<u32>,
        deleting: bool,
    ) -> Result<Template> {
        for _ in 0..self.options().max_conflict_retries {
            let mut template = self.read_template(name).await?;
            if let Some(v) = version {
                if template.version(v).is_none() {
                    return Err(Error::not_found(format!("template `{name}` version {v}")));
                }
            }
            for v in &mut template.versions {
                if version.is_none_or(|wanted| wanted == v.version) {
                    v.deleting = deleting;
                }
            }
            match self
                .inner
                .store
                .commit(put_object(Txn::new(), &template))
                .await
            {
                Ok(revision) => {
                    template.revision = revision;
                    return Ok(template);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("template", name))
    }

    /// Template `name` as stored. Errors: `NotFound`, the store's.
    async fn read_template(&self, name: &TemplateName) -> Result<Template> {
        self.inner
            .store
            .get_object::<Template>(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("template `{name}`")))
    }

    /// Template `name` (only `version`, if given) with its users.
    async fn template_info(
        &self,
        name: &TemplateName,
        version: Option<u32>,
    ) -> Result<TemplateInfo> {
        let mut template = self.read_template(name).await?;
        if let Some(v) = version {
            template.versions.retain(|t| t.version == v);
            if template.versions.is_empty() {
                return Err(Error::not_found(format!("template `{name}` version {v}")));
            }
        }
        let instances = self.template_users(Some(name)).await?;
        Ok(TemplateInfo::count(template, &instances))
    }

    /// The instances in the store created from template `name` (or from
    /// any template): read from the store, not the cache, so a count or a
    /// delete's check sees every committed create.
    async fn template_users(&self, name: Option<&TemplateName>) -> Result<Vec<Instance>> {
        let (users, _) = self
            .inner
            .store
            .list_objects::<Instance, _>(|i| {
                i.template
                    .as_ref()
                    .is_some_and(|o| name.is_none_or(|n| o.name == *n))
            })
            .await?;
        Ok(users)
    }
}

/// The admission that makes an instance created from a template commit
/// only while its version stands and is not being deleted: it checks the
/// template's revision in the create's transaction. Every controller has it.
#[derive(Debug, Default)]
pub(super) struct TemplateCheck;

#[async_trait]
impl Admission for TemplateCheck {
    fn prefixes(&self) -> Vec<String> {
        vec![TEMPLATES_PREFIX.to_owned()]
    }

    /// Errors: `NotFound` (the template or version is gone),
    /// `FailedPrecondition` (the version is being deleted), `Internal` (an
    /// undecodable template).
    async fn admit(&self, instance: &Instance, view: &dyn StoreView, txn: Txn) -> Result<Txn> {
        let Some(origin) = &instance.template else {
            return Ok(txn);
        };
        let key = Template::key_for(&origin.name);
        let kv = view
            .get(&key)
            .ok_or_else(|| Error::not_found(format!("template `{}`", origin.name)))?;
        let template: Template = decode(&kv)?;
        template.resolve(Some(origin.version))?;
        Ok(txn.check(key, Precondition::Revision(kv.mod_revision)))
    }
}
